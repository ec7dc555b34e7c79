"""What the CDK app and the launcher share, importing neither: settings, the EMR cluster definition,
the bucket's artifact layout, the job zip and the run spec. Pure Python (no aws_cdk, boto3, pyspark)."""
