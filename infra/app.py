"""CDK app: the storage and cluster stacks, checked by cdk-nag's AwsSolutions pack. Nothing else."""

from __future__ import annotations

import dataclasses
import os

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from blueprint.settings import Settings
from infra.cluster import ClusterStack
from infra.storage import StorageStack


def settings_from_app(app: App) -> Settings:
    """The typed settings from the app's context (cdk.json plus any ``-c key=value``)."""
    names = [field.name for field in dataclasses.fields(Settings)]
    context = {name: app.node.try_get_context(name) for name in names}
    return Settings.from_context({name: value for name, value in context.items() if value is not None})


def build(app: App) -> tuple[StorageStack, ClusterStack]:
    """Add both stacks and the nag checks to ``app``; region/account come from the CDK environment."""
    settings = settings_from_app(app)
    env = Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))
    storage = StorageStack(app, settings.storage_stack_name, settings=settings, env=env)
    cluster = ClusterStack(
        app,
        settings.cluster_stack_name,
        settings=settings,
        env=env,
    )
    cluster.add_stack_dependency(storage, "imports the buckets and key by export name")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return storage, cluster


def main() -> None:
    app = App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
