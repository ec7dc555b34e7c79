"""The seed notebook's featurization and PCA, as written, for the benchmark's comparison.

What the original notebook did (run on an EMR notebook, Spark defaults otherwise):
  1. `spark.read.format("binaryFile")` with `pathGlobFilter="*.jpg"` and `recursiveFileLookup`,
     label = parent folder (`element_at(split(path, "/"), -2)`);
  2. built `MobileNetV2(weights="imagenet", include_top=True)`, cut it at `layers[-2]` (the
     1280-d global average pooling), and broadcast `new_model.get_weights()` from the driver;
  3. a `SCALAR_ITER` pandas UDF that rebuilds the model from the broadcast weights in every
     iterator (every task), decodes each image with PIL (`Image.open(...).resize([224, 224])`,
     `img_to_array`, `preprocess_input`) and calls `model.predict` per Arrow batch;
  4. `images.repartition(24).select(path, label, featurize_udf("content"))`, which shuffles
     every image's bytes, and no caching, so every action below re-runs the whole inference;
  5. an array -> `VectorUDT` UDF, `features_df.first()`, a `Pipeline(StandardScaler(withMean,
     withStd), PCA(k=1280))` fit to read the explained variance, the smallest k reaching 0.99,
     a second pipeline fit with that k, `transform`, and the Parquet write.

Changed here, and only this: the input/output paths and the weights. ImageNet weights cannot
be downloaded offline, so the model is the same architecture built without its top (exactly
the original's `layers[-2]` output: `include_top=False, pooling="avg"`) and loaded from the
job's weights file, whose values are broadcast as the original did. The session is local
(`--master`), as the benchmark runs on one machine. For the benchmark only, an accumulator
counts the images that go through `model.predict` (the original had none).

    python -m bench.seed_notebook --input DIR --output DIR --weights FILE [--master local[2]]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np
import pandas as pd


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from PIL import Image
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import PandasUDFType, col, element_at, pandas_udf, split, udf
    from tensorflow.keras import Model
    from tensorflow.keras.applications.mobilenet_v2 import MobileNetV2, preprocess_input
    from tensorflow.keras.preprocessing.image import img_to_array

    timings: dict[str, float] = {}
    start = time.perf_counter()
    spark = (
        SparkSession.builder.appName("P8")
        .master(args.master)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("WARN")
    timings["session"] = time.perf_counter() - start

    images = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(args.input)
    )
    images = images.withColumn("label", element_at(split(images["path"], "/"), -2))

    def base_model():
        # Seed: MobileNetV2(weights="imagenet", include_top=True) cut at layers[-2].
        model = MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3))
        return Model(inputs=model.input, outputs=model.output)

    new_model = base_model()
    new_model.load_weights(args.weights)
    brodcast_weights = sc.broadcast(new_model.get_weights())
    processed = sc.accumulator(0)  # bench instrumentation only

    def model_fn():
        model = MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3))
        for layer in model.layers:
            layer.trainable = False
        new_model = Model(inputs=model.input, outputs=model.output)
        new_model.set_weights(brodcast_weights.value)
        return new_model

    def preprocess(content):
        img = Image.open(io.BytesIO(content)).resize([224, 224])
        arr = img_to_array(img)
        return preprocess_input(arr)

    def featurize_series(model, content_series):
        input = np.stack(content_series.map(preprocess))
        preds = model.predict(input)
        processed.add(len(input))
        output = [p.flatten() for p in preds]
        return pd.Series(output)

    @pandas_udf("array<float>", PandasUDFType.SCALAR_ITER)
    def featurize_udf(content_series_iter):
        model = model_fn()
        for content_series in content_series_iter:
            yield featurize_series(model, content_series)

    features_df = images.repartition(24).select(col("path"), col("label"), featurize_udf("content").alias("features"))

    list_to_vector_udf = udf(lambda vector: Vectors.dense(vector), VectorUDT())
    features_df = features_df.withColumn("features_vec", list_to_vector_udf("features"))

    tick = time.perf_counter()
    features_df.first()
    timings["first"] = time.perf_counter() - tick

    tick = time.perf_counter()
    scaler = StandardScaler(inputCol="features_vec", outputCol="scaled_features", withMean=True, withStd=True)
    pca = PCA(k=args.first_k, inputCol="scaled_features", outputCol="pca_features")
    pipeline = Pipeline(stages=[scaler, pca])
    model = pipeline.fit(features_df)
    explained = model.stages[-1].explainedVariance.cumsum()
    k = int(np.argmax(explained >= args.variance) + 1)
    timings["fit_k_all"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pca = PCA(k=k, inputCol="scaled_features", outputCol="pca_features")
    pipeline = Pipeline(stages=[scaler, pca])
    model = pipeline.fit(features_df)
    timings["fit_k"] = time.perf_counter() - tick

    tick = time.perf_counter()
    result = model.transform(features_df)
    result.select("path", "label", "features", "pca_features").write.mode("overwrite").parquet(args.output)
    timings["write"] = time.perf_counter() - tick
    timings["total_in_session"] = time.perf_counter() - start
    report = {"k": k, "model_processed": int(processed.value), "first_k": args.first_k, "timings_s": timings}
    spark.stop()
    return report


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The seed notebook's approach (benchmark comparison).")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--weights", required=True, help="the job's MobileNetV2 no-top weights file")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--variance", type=float, default=0.99)
    p.add_argument("--first-k", type=int, default=1280, help="k of the first PCA fit (the seed: 1280)")
    return p.parse_args(argv)


if __name__ == "__main__":
    print("SEED_REPORT " + json.dumps(main()))
