"""Deployment of a service: Kubernetes and Flink manifests, a Grafana dashboard, and local workspaces.

* :mod:`~vatic.cli.deploy.manifests` builds the Kubernetes objects of one service in one environment;
* :mod:`~vatic.cli.deploy.dashboard` its Grafana dashboard;
* :mod:`~vatic.cli.deploy.validate` validates manifests offline (Kubernetes schemas, vendored CRD schemas);
* :mod:`~vatic.cli.deploy.output` renders into ``k8s/<service>/<env>/``, plans (diffs) and writes;
* :mod:`~vatic.cli.deploy.workspace` runs a service's serving layer locally (``vatic workspace``).

Everything is derived from the service config (:mod:`vatic.serving.config`): one definition, every path.
"""
