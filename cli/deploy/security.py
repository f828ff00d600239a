"""Secrets by reference, and the security checks of ``vatic render``.

Contract:

* :func:`kafka_access`, :func:`registry_access`, :func:`redis_access`, :func:`gateway_access`,
  :func:`model_tls_access` and :func:`model_ca_access` turn ``kubernetes.security`` into what a container needs:
  plain environment variables, environment variables ``valueFrom.secretKeyRef`` and files mounted read-only
  from ``secret`` volumes (mode 0440: the owner and the pod's fsGroup read them) under
  ``/var/run/secrets/vatic/<volume>/``. A secret's value never appears in a manifest, and no manifest creates a
  Secret: the Secrets named by the config are created in the cluster by whoever owns them.
* :func:`refuse_literal_secrets` raises :class:`ConfigError` where the config holds what looks like a secret
  in a place the renderer would copy into a manifest (the ConfigMap carries the config files themselves): a URL
  with a password, a secret-named model server environment variable, a password in the Flink configuration.
  The message names the setting and never the value.
* :func:`security_check` returns warning lines about unsafe settings, and raises :class:`ConfigError` (one
  line per problem, naming the setting to change) for the environment named ``production`` when its Kafka is
  unencrypted (``PLAINTEXT``, ``SASL_PLAINTEXT``) or its gateway authenticates nobody, unless
  ``kubernetes.security.allow_plaintext_kafka`` / ``allow_unauthenticated_gateway`` says so explicitly.

Environment variable names are the shared contract of the Kafka, gateway, model server, Redis and schema
registry settings (``VATIC_KAFKA_*``, ``VATIC_GATEWAY_*``, ``VATIC_MODEL_TLS_*``, ``VATIC_REDIS_*``,
``VATIC_SCHEMA_REGISTRY_*``), plus ``VATIC_STREAM_MODEL_CA_FILE`` for the job's client of a model server that serves
TLS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from vatic.schemas.errors import ConfigError
from vatic.serving.config.model import CredentialsSecurity, SecretKeyRef, ServiceConfig

__all__ = [
    "SECRETS_ROOT",
    "SECRET_FILE_MODE",
    "Access",
    "gateway_access",
    "kafka_access",
    "looks_secret",
    "model_ca_access",
    "model_tls_access",
    "redis_access",
    "refuse_literal_secrets",
    "registry_access",
    "security_check",
]

SECRETS_ROOT = "/var/run/secrets/vatic"
SECRET_FILE_MODE = 0o440
PRODUCTION = "production"
#: words of an environment variable name (split at ``_``) that say it holds a secret: ``DB_PASSWORD``,
#: ``HF_TOKEN``, ``OPENAI_API_KEY`` - but not ``TOKENIZERS_PARALLELISM``
_SECRET_WORDS = {"PASSWORD", "PASSWD", "PASS", "SECRET", "TOKEN", "CREDENTIAL", "CREDENTIALS", "APIKEY"}
_SECRET_SUFFIXES = ("API_KEY", "PRIVATE_KEY", "ACCESS_KEY", "SECRET_KEY")
_SECRET_FLINK_KEY = re.compile(r"password|passwd|secret|token|jaas|credential", re.IGNORECASE)


@dataclass
class Access:
    """What one container needs to reach something: environment entries, volume mounts and pod volumes."""

    env: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)

    def __add__(self, other: Access) -> Access:
        return Access(self.env + other.env, self.mounts + other.mounts, self.volumes + other.volumes)

    def value(self, name: str, value: str | None) -> None:
        """A plain (non-secret) setting; None is left out."""
        if value is not None:
            self.env.append({"name": name, "value": value})

    def secret(self, name: str, ref: SecretKeyRef | None) -> None:
        """An environment variable set from one key of a Secret."""
        if ref is not None:
            self.env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})

    def file(self, name: str, ref: SecretKeyRef | None, volume: str, file: str) -> None:
        """One key of a Secret as the read-only file ``/var/run/secrets/vatic/<volume>/<file>``, its path in
        the environment variable ``name``."""
        if ref is None:
            return
        folder = f"{SECRETS_ROOT}/{volume}"
        items = [{"key": ref.key, "path": file}]
        self.volumes.append(
            {"name": volume, "secret": {"secretName": ref.name, "items": items, "defaultMode": SECRET_FILE_MODE}}
        )
        self.mounts.append({"name": volume, "mountPath": folder, "readOnly": True})
        self.env.append({"name": name, "value": f"{folder}/{file}"})


def kafka_access(config: ServiceConfig) -> Access:
    """``VATIC_KAFKA_*`` of the Kafka clients (the Flink job's JobManager and TaskManagers)."""
    kafka = config.kubernetes.security.kafka
    out = Access()
    out.value("VATIC_KAFKA_SECURITY_PROTOCOL", kafka.security_protocol)
    out.value("VATIC_KAFKA_SASL_MECHANISM", kafka.sasl_mechanism)
    out.value("VATIC_KAFKA_SASL_USERNAME", kafka.sasl_username)
    out.secret("VATIC_KAFKA_SASL_PASSWORD", kafka.sasl_password)
    out.file("VATIC_KAFKA_SSL_CA_LOCATION", kafka.ca, "kafka-ca", "ca.crt")
    out.file("VATIC_KAFKA_SSL_CERTIFICATE_LOCATION", kafka.client_cert, "kafka-client-cert", "tls.crt")
    out.file("VATIC_KAFKA_SSL_KEY_LOCATION", kafka.client_key, "kafka-client-key", "tls.key")
    out.secret("VATIC_KAFKA_SSL_KEY_PASSWORD", kafka.client_key_password)
    return out


def _credentials(prefix: str, volume: str, spec: CredentialsSecurity) -> Access:
    out = Access()
    out.value(f"{prefix}_USERNAME", spec.username)
    out.secret(f"{prefix}_PASSWORD", spec.password)
    out.file(f"{prefix}_CA_FILE", spec.ca, volume, "ca.crt")
    return out


def registry_access(config: ServiceConfig) -> Access:
    """``VATIC_SCHEMA_REGISTRY_*`` of the schema registry's clients (the Flink job)."""
    return _credentials("VATIC_SCHEMA_REGISTRY", "schema-registry-ca", config.kubernetes.security.schema_registry)


def redis_access(config: ServiceConfig) -> Access:
    """``VATIC_REDIS_*`` of the feature store's readers (the Flink job and the gateway)."""
    return _credentials("VATIC_REDIS", "redis-ca", config.kubernetes.security.redis)


def gateway_access(config: ServiceConfig) -> Access:
    """``VATIC_GATEWAY_*`` files of the gateway: its TLS pair, client CA (mTLS), clients file, model CA."""
    gateway = config.kubernetes.security.gateway
    out = Access()
    out.file("VATIC_GATEWAY_TLS_CERT_FILE", gateway.tls_cert, "gateway-tls-cert", "tls.crt")
    out.file("VATIC_GATEWAY_TLS_KEY_FILE", gateway.tls_key, "gateway-tls-key", "tls.key")
    out.file("VATIC_GATEWAY_TLS_CLIENT_CA_FILE", gateway.client_ca, "gateway-client-ca", "ca.crt")
    out.file("VATIC_GATEWAY_CLIENTS_FILE", gateway.clients, "gateway-clients", "clients.yaml")
    out.file("VATIC_GATEWAY_JWT_KEY_FILE", gateway.jwt_key, "gateway-jwt-key", "jwt.pem")
    out.value("VATIC_GATEWAY_JWT_AUDIENCE", gateway.jwt_audience if gateway.jwt_key else None)
    out.value("VATIC_GATEWAY_JWT_ISSUER", gateway.jwt_issuer if gateway.jwt_key else None)
    out.file("VATIC_GATEWAY_MODEL_CA_FILE", config.kubernetes.security.model.ca, "model-ca", "ca.crt")
    return out


def model_tls_access(config: ServiceConfig) -> Access:
    """``VATIC_MODEL_TLS_*`` files of the model server, and its environment variables taken from Secrets."""
    model = config.kubernetes.security.model
    out = Access()
    out.file("VATIC_MODEL_TLS_CERT_FILE", model.tls_cert, "model-tls-cert", "tls.crt")
    out.file("VATIC_MODEL_TLS_KEY_FILE", model.tls_key, "model-tls-key", "tls.key")
    for name, ref in sorted(model.secret_env.items()):
        out.secret(name, ref)
    return out


def model_ca_access(config: ServiceConfig) -> Access:
    """``VATIC_STREAM_MODEL_CA_FILE`` of the job's model client: the CA that signed the model server's certificate."""
    out = Access()
    out.file("VATIC_STREAM_MODEL_CA_FILE", config.kubernetes.security.model.ca, "model-ca", "ca.crt")
    return out


# --- what the renderer refuses ----------------------------------------------------------------------------


def _has_password(url: str | None) -> bool:
    if not url:
        return False
    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        return parts.password is not None or (parts.username is not None and "@" in parts.netloc)
    except ValueError:
        return "@" in url


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (see :data:`_SECRET_WORDS`)."""
    upper = name.upper()
    return bool(_SECRET_WORDS & set(upper.split("_"))) or upper.endswith(_SECRET_SUFFIXES)


def refuse_literal_secrets(config: ServiceConfig) -> None:
    """Raise :class:`ConfigError` where a secret would be copied into a manifest (see the module docstring)."""
    where = f"service {config.service} ({config.environment})"
    urls = {
        "features.redis_url": config.features.redis_url if config.features else None,
        "registry.uri": config.registry.uri,
        "kubernetes.schema_registry_url": config.kubernetes.schema_registry_url,
        "kubernetes.kafka_bootstrap_servers": config.kubernetes.kafka_bootstrap_servers,
        "kubernetes.prometheus_url": config.kubernetes.prometheus_url,
    }
    problems = []
    for setting, url in urls.items():
        if _has_password(url):
            problems.append(
                f"{where}: {setting} carries credentials in the URL; remove them and name the Secret that holds "
                "them in kubernetes.security (the config files are copied into a ConfigMap)"
            )
    for name in sorted(config.env):
        if looks_secret(name):
            problems.append(
                f"{where}: env.{name} looks like a secret; move it to kubernetes.security.model.secret_env "
                f"({name}: {{name: <secret>, key: <key>}}) so that it is read from a Kubernetes Secret"
            )
    for key in sorted(config.kubernetes.flink.configuration):
        if _SECRET_FLINK_KEY.search(key):
            problems.append(
                f"{where}: kubernetes.flink.configuration.{key} would write a secret into the FlinkDeployment; "
                "remove it (Kafka credentials come from kubernetes.security.kafka)"
            )
    if problems:
        raise ConfigError("\n".join(problems))


def _gateway_authenticates(config: ServiceConfig) -> bool:
    gateway = config.kubernetes.security.gateway
    return bool(config.gateway.auth_token_env or gateway.clients or gateway.client_ca or gateway.jwt_key)


def security_check(config: ServiceConfig) -> list[str]:
    """Warning lines about unsafe settings; in ``production`` the same findings raise :class:`ConfigError`."""
    security = config.kubernetes.security
    where = f"{config.service}/{config.environment}"
    file = f"{config.environment}.yaml" if config.environment != "local" else "service.yaml"
    production = config.environment == PRODUCTION
    refused, warned = [], []
    protocol = security.kafka.security_protocol
    kafka_used = config.streaming is not None  # the Flink job is the service's Kafka client
    if kafka_used and protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and not security.allow_plaintext_kafka:
        change = "SASL_SSL" if protocol == "SASL_PLAINTEXT" else "SASL_SSL or SSL"
        line = (
            f"{where}: kubernetes.security.kafka.security_protocol is {protocol} (unencrypted Kafka); set it to "
            f"{change} in {file}"
        )
        if production:
            refused.append(f"{line}, or kubernetes.security.allow_plaintext_kafka: true to accept it")
        else:
            warned.append(f"warning: {line} before production")
    if not _gateway_authenticates(config) and not security.allow_unauthenticated_gateway:
        line = (
            f"{where}: the gateway authenticates no client; set kubernetes.security.gateway.clients (a Secret "
            f"with the clients file), gateway.jwt_key (JWTs) or gateway.client_ca (mutual TLS) in {file}"
        )
        if production:
            refused.append(f"{line}, or kubernetes.security.allow_unauthenticated_gateway: true to accept it")
        else:
            warned.append(f"warning: {line} before production")
    if refused:
        raise ConfigError("\n".join(refused))
    return warned
