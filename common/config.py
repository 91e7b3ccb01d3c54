"""Deployment configuration from the environment, validated once at start-up.

A service declares its settings as a pydantic model; ``load`` reads ``FOLLOWUP_<FIELD>``
for every field and turns the first problem into one readable line naming the variable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn, TypeVar, get_origin

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from common.clock import Clock, ScaledClock, SharedClock, SystemClock
from common.codec import DEFAULT_MAX_ORIGINAL_BYTES, LIMIT_MAX_ORIGINAL_BYTES

if TYPE_CHECKING:
    from common.sites import SiteRegistry

PREFIX = "FOLLOWUP_"


class ConfigError(Exception):
    """A wrong configuration value; its message is one line fit for an operator."""


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(BaseModel):
    """How every Kafka client (the services' aiokafka ones, the admin tool's kafka-python
    ones) reaches the broker: TLS with a CA and an optional client certificate, SASL with
    PLAIN or SCRAM. The password comes from the environment (a Secret) and is never shown."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    # Empty CA file: the system's trust store (a managed Kafka with a public CA).
    kafka_ssl_cafile: str = ""
    # mTLS: the client's certificate chain and key (PEM); Strimzi's KafkaUser tls secret.
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_key_password: SecretStr = SecretStr("")
    kafka_ssl_check_hostname: bool = True
    kafka_sasl_mechanism: SaslMechanism = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")

    @property
    def uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        protocol = f"{PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
        if self.uses_sasl:
            for field in ("kafka_sasl_mechanism", "kafka_sasl_username"):
                if not getattr(self, field):
                    raise ValueError(f"{protocol} needs {env_name(field)}")
            if not self.kafka_sasl_password.get_secret_value():
                raise ValueError(f"{protocol} needs {env_name('kafka_sasl_password')}")
        if self.kafka_ssl_certfile and not self.kafka_ssl_keyfile:
            raise ValueError(
                f"{env_name('kafka_ssl_certfile')} needs {env_name('kafka_ssl_keyfile')}"
            )
        if self.uses_tls:
            for field in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
                path = getattr(self, field)
                if path and not Path(path).is_file():
                    raise ValueError(f"{env_name(field)}: no such file {path!r}")
        return self


class StartupError(ConfigError):
    """A dependency unreachable or a port taken at start-up: one line naming the dependency,
    its address and the variable to set."""


class Settings(KafkaSecurity):
    """What every service needs. Services subclass it and add their own fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str = "followup"
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: AnyUrl = AnyUrl("postgresql://followup:followup@127.0.0.1:15432/followup")
    topic_prefix: str = ""
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    clock: Literal["system", "scaled", "shared"] = "system"
    # shared: the file a harness (the outcome lab) holds virtual time in (common.clock).
    clock_file: Path | None = None
    clock_anchor_real: datetime | None = None
    clock_anchor_virtual: datetime | None = None
    clock_speed: float = Field(default=1.0, gt=0)
    # The audit log of reads of personal data (common/audit.py), one schema for all.
    audit_schema: str = "audit"
    # How much of a refused record a dead letter keeps (bytes); the letter must fit the
    # producer's 1 MiB limit after base64, so 700 000 is the ceiling.
    deadletter_max_original_bytes: int = Field(
        default=DEFAULT_MAX_ORIGINAL_BYTES, ge=1024, le=LIMIT_MAX_ORIGINAL_BYTES
    )
    # The clinics this deployment serves (common/sites.py, docs/sites.md); empty: one
    # implicit site with the settings below, as before.
    sites_path: str = ""
    sites_recheck_seconds: float = Field(default=5.0, gt=0)

    def site_registry(self) -> SiteRegistry:
        """The sites file validated now (a wrong one: ConfigError naming file and line)."""
        from common.sites import SiteError, SiteRegistry

        try:
            return SiteRegistry(self.sites_path or None, recheck_seconds=self.sites_recheck_seconds)
        except SiteError as exc:
            raise ConfigError(str(exc)) from None

    def make_clock(self) -> Clock:
        if self.clock == "system":
            return SystemClock()
        if self.clock == "shared":
            if self.clock_file is None or not self.clock_file.is_file():
                raise ConfigError(f"{PREFIX}CLOCK=shared needs an existing {PREFIX}CLOCK_FILE")
            return SharedClock(self.clock_file)
        if self.clock_anchor_real is None or self.clock_anchor_virtual is None:
            raise ConfigError(
                f"{PREFIX}CLOCK=scaled needs {PREFIX}CLOCK_ANCHOR_REAL and "
                f"{PREFIX}CLOCK_ANCHOR_VIRTUAL"
            )
        try:
            return ScaledClock(self.clock_anchor_real, self.clock_anchor_virtual, self.clock_speed)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}CLOCK_ANCHOR_*: {exc}") from exc


S = TypeVar("S", bound=BaseModel)


def env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def load(model: type[S], environ: Mapping[str, str] | None = None) -> S:
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {
        name: environ[env_name(name)] for name in model.model_fields if env_name(name) in environ
    }
    for name, value in list(raw.items()):
        # A mapping or a list (e.g. FOLLOWUP_CLINIC_NAMES) is given as JSON.
        if get_origin(model.model_fields[name].annotation) in (dict, list):
            try:
                raw[name] = json.loads(str(value))
            except ValueError:
                raise ConfigError(f"{env_name(name)}: not valid JSON") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if not first["loc"]:  # a rule across fields: its message names the variables
            raise ConfigError(str(first["msg"]).removeprefix("Value error, ")) from None
        field = str(first["loc"][0]) if first["loc"] else "?"
        shown = raw.get(field)
        value = f" (got {shown!r})" if shown is not None and not _is_secret(field) else ""
        raise ConfigError(f"{env_name(field)}: {first['msg']}{value}") from None


def _is_secret(field: str) -> bool:
    return any(word in field for word in ("secret", "token", "password", "url", "key"))


def usage(model: type[BaseModel], prog: str) -> str:
    """A service's --help: it takes no arguments; every FOLLOWUP_* variable, its default."""
    lines = [
        f"usage: python -m {prog}",
        "",
        "Configured from the environment only (no arguments); each variable at its default",
        "(README.md and the service's README say what each one does):",
    ]
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        lines.append(f"  {env_name(name)}={'' if default is None else default}")
    return "\n".join(lines)


def load_or_exit(
    model: type[S], environ: Mapping[str, str] | None = None, argv: list[str] | None = None
) -> S:
    """For a service's entry point: ``--help`` prints the usage and exits 0 without starting
    anything; a wrong value stops it with one line on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        prog = model.__module__.removesuffix(".app").removesuffix(".settings")
        if argv[0] in ("-h", "--help"):
            print(usage(model, prog))
            raise SystemExit(0)
        _exit(f"python -m {prog} takes no arguments (got {argv[0]!r}); see --help")
    try:
        return load(model, environ)
    except ConfigError as exc:
        _exit(str(exc))


def _exit(message: str) -> NoReturn:
    print(f"configuration error: {message}", file=sys.stderr)
    raise SystemExit(2)
