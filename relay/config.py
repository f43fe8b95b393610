"""Load relay.toml into frozen, validated models (SPEC §4).

Every problem is reported as a dotted key path plus a reason, all at once, so an
operator can fix a config in one pass. `load_config` is the only entry point.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from relay.config_checks import check_http_url, cross_check, resolve_env, toml_bool
from relay.destination_ids import address_of, derived_id, id_problem
from relay.durations import parse_duration_s
from relay.hotmart import KNOWN_EVENTS, SLIP_EVENT
from relay.hotmart_payment import PAYMENT_TYPES

Duration = Annotated[float, BeforeValidator(parse_duration_s)]
Flag = Annotated[bool, BeforeValidator(toml_bool)]  # every boolean key: true or false, nothing else

# Defaults, each with the reason for its value.
DEFAULT_RETRY_DELAYS_S = (60.0, 300.0, 1800.0, 7200.0)  # 1 try + 4 retries = Hotmart's 5 attempts
DEFAULT_TIMEOUT_S = 10.0  # long enough for a slow receiver, short enough to free the slot
DEFAULT_CONCURRENCY = 64  # attempts in flight across all destinations
DEFAULT_PER_DESTINATION_CONCURRENCY = 4  # one slow affiliate cannot take every slot
# How far a fast, healthy receiver's cap may grow above that floor (relay.adaptive_caps):
# at 4 in flight one receiver takes about 430/s; 32 lets a fast one take a whole drain.
DEFAULT_PER_DESTINATION_MAX_CONCURRENCY = 32
DEFAULT_DISABLE_AFTER_FAILURES = 20  # a sustained run of failed deliveries, not one bad message
DEFAULT_MAX_BODY_BYTES = 1_048_576  # Hotmart payloads are a few kB; 1 MiB is generous
# A request head (and a keep-alive pause) arrives in milliseconds from Hotmart; 15 s covers a
# slow link many times over, and frees the socket an idle or slow-drip client would hold.
DEFAULT_IDLE_TIMEOUT_S = 15.0
# max_body_bytes at about 35 kB/s: a legitimate body is read well inside it.
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_RETENTION_S = 30 * 86400.0
DEFAULT_BUSY_TIMEOUT_S = 5.0  # rides out a CLI command's short write without failing ingest
DEFAULT_SHUTDOWN_GRACE_S = 10.0  # SIGTERM waits this long for attempts in flight
# `relay serve`'s processes (README, "Processes"): one ingest process and one dispatcher
# process of its own, measured in bench/ingest.py on 2 cores; `delivery.workers = 0`
# keeps the dispatcher inside the one ingest process, for the smallest machines.
DEFAULT_SERVER_WORKERS = 1
DEFAULT_DELIVERY_WORKERS = 1
MAX_WORKERS = 64  # a bound on a typo, not on a machine
# Six hours leave the buyer most of a day's waking hours to pay once reminded, and an
# affiliate time to write to them, even for a Pix code that lives only a day or two.
DEFAULT_REMIND_BEFORE_S = 6 * 3600.0
Locale = Literal["es", "pt", "en"]


class ConfigError(Exception):
    """The config cannot be used; `problems` holds (dotted path, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {reason}" for path, reason in problems))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    path: str = "/hotmart/webhook"
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)
    # From connect, or from the end of the last response, to a complete request head.
    idle_timeout_s: Duration = Field(DEFAULT_IDLE_TIMEOUT_S, alias="idle_timeout", gt=0)
    # From a complete request head to the whole body.
    body_timeout_s: Duration = Field(DEFAULT_BODY_TIMEOUT_S, alias="body_timeout", gt=0)
    # "auto": uvloop when it is installed (`pip install 'relay[fast]'`), else asyncio's own.
    event_loop: Literal["auto", "asyncio"] = "auto"
    # Ingest processes sharing the listening socket.
    workers: int = Field(DEFAULT_SERVER_WORKERS, ge=1, le=MAX_WORKERS)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class StorageConfig(_Model):
    sqlite_path: str = "var/relay.sqlite3"
    # Set (a postgres:// URL, usually "env:NAME"): the store is PostgreSQL, shared by every
    # instance that names it. A secret (it may carry a password): never logged or shown.
    postgres_dsn: SecretStr | None = Field(None, min_length=1)
    retention_s: Duration = Field(DEFAULT_RETENTION_S, alias="retention")
    # How long a write waits for a lock held by another process before ingest answers 503.
    busy_timeout_s: Duration = Field(DEFAULT_BUSY_TIMEOUT_S, alias="busy_timeout")


class AdminConfig(_Model):
    token: str | None = None
    # Set: GET /metrics wants `Authorization: Bearer <it>`. Unset: open (no buyer data in it).
    metrics_token: str | None = Field(None, min_length=1)


class DeliveryConfig(_Model):
    retry_delays_s: tuple[Duration, ...] = Field(DEFAULT_RETRY_DELAYS_S, alias="retry_delays")
    timeout_s: Duration = Field(DEFAULT_TIMEOUT_S, alias="timeout", gt=0)
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1)
    per_destination_concurrency: int = Field(DEFAULT_PER_DESTINATION_CONCURRENCY, ge=1)
    # The ceiling of the adaptive cap; at or below the floor above, caps never grow.
    per_destination_max_concurrency: int = Field(DEFAULT_PER_DESTINATION_MAX_CONCURRENCY, ge=1)
    disable_after_failures: int = Field(DEFAULT_DISABLE_AFTER_FAILURES, ge=1)
    allow_private_networks: Flag = False
    shutdown_grace_s: Duration = Field(DEFAULT_SHUTDOWN_GRACE_S, alias="shutdown_grace")
    # Dispatcher processes; 0: the dispatcher runs inside the (one) ingest process.
    workers: int = Field(DEFAULT_DELIVERY_WORKERS, ge=0, le=MAX_WORKERS)

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays_s) + 1


class SmtpConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password: str = ""
    pool_size: int = Field(4, ge=1, le=64)  # reused connections; see DESIGN.md's SMTP figures
    # A CA bundle for a server whose certificate a private CA signed; default: the system's.
    ca_file: str | None = None


class EmailConfig(_Model):
    from_address: str = Field("relay@localhost", alias="from")
    transport: Literal["smtp", "maildir"] = "smtp"
    maildir: str = "var/mail"
    smtp: SmtpConfig = SmtpConfig()


def _single_line(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if "\r" in value or "\n" in value:
        raise ValueError("must be a single line")
    return value


class _DestinationModel(_Model):
    """What every destination has: an optional `id`, and the id its key uses."""

    kind: str
    id: str | None = None  # unique within the affiliate; see relay.destination_ids

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        problem = None if value is None else id_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def stable_id(self) -> str:
        """The `id`, or one derived from kind and address: never the list position."""
        # address_of is what check-config derives ids with too: the two always agree.
        return self.id or derived_id(self.kind, address_of(self.kind, vars(self)) or "")


class EmailDestination(_DestinationModel):
    kind: Literal["email"]
    to: Annotated[str, BeforeValidator(_single_line)]
    enabled: Flag = True

    @field_validator("to")
    @classmethod
    def _looks_like_address(cls, value: str) -> str:
        local, _, domain = value.rpartition("<")[2].rstrip(">").partition("@")
        if not local or ("." not in domain and domain != "localhost"):
            raise ValueError(f"{value!r} is not an email address")
        return value


class WebhookDestination(_DestinationModel):
    kind: Literal["webhook"]
    url: str
    secret: str
    allow_http: Flag = False  # explicit opt-in for a plain-http receiver
    enabled: Flag = True

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        check_http_url(value)
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: str) -> str:
        if not value.startswith("whsec_") or len(value) <= len("whsec_"):
            raise ValueError("must be a Standard Webhooks secret starting with 'whsec_'")
        return value


Destination = Annotated[EmailDestination | WebhookDestination, Field(discriminator="kind")]


def _payment_type(kind: str) -> str:
    if kind not in PAYMENT_TYPES:
        hint = get_close_matches(kind.upper(), PAYMENT_TYPES, n=1)
        suggestion = f"; did you mean {hint[0]}?" if hint else ""
        raise ValueError(f"{kind!r} is not a Hotmart payment type{suggestion}")
    return kind


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("a slip stays payable for some time: give a duration over 0")
    return seconds


PaymentType = Annotated[str, AfterValidator(_payment_type)]
Validity = Annotated[Duration, AfterValidator(_positive)]


class RecoveryConfig(_Model):
    """`[recovery]`: sale recovery. Its presence turns it on (unless `enabled = false`)."""

    enabled: Flag = True
    remind_before_s: Duration = Field(DEFAULT_REMIND_BEFORE_S, alias="remind_before", gt=0)
    # Payment type -> how long its slip stays payable after the order, for slips whose
    # event carries no expiry (every one but Pix). A type not named gets no reminder.
    slip_validity_s: dict[PaymentType, Validity] = Field(
        default_factory=dict, alias="slip_validity"
    )
    notify_paid: Flag = True
    notify_expired: Flag = False


class AffiliateConfig(_Model):
    code: str = Field(min_length=1)
    name: str = ""
    buyer_data: Flag = False  # privacy gate: absent means nothing is ever sent
    products: Literal["all"] | tuple[str, ...] = "all"
    events: tuple[str, ...] = (SLIP_EVENT,)
    locale: Locale = "es"
    destinations: tuple[Destination, ...] = ()
    recovery: Flag = True  # false: this affiliate gets no reminders or follow-ups

    @field_validator("products", mode="before")
    @classmethod
    def _product_ids_as_text(cls, value: Any) -> Any:
        # Hotmart sends product ids as numbers; ucodes are strings. Compare as text.
        if isinstance(value, list | tuple):
            if not all(
                isinstance(item, str | int) and not isinstance(item, bool) for item in value
            ):
                raise ValueError("product ids and ucodes must be numbers or strings")
            return tuple(str(item) for item in value)
        if value != "all":
            raise ValueError('must be "all" or a list of product ids and/or ucodes')
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in KNOWN_EVENTS]
        if unknown:
            raise ValueError(f"unknown Hotmart event(s): {', '.join(unknown)}")
        return value

    def covers_product(self, product_id: str, product_ucode: str) -> bool:
        if self.products == "all":
            return True
        return product_id in self.products or (
            bool(product_ucode) and product_ucode in self.products
        )

    def destination(self, destination_id: str) -> EmailDestination | WebhookDestination | None:
        return next((d for d in self.destinations if d.stable_id == destination_id), None)


class ProducerConfig(_Model):
    id: str = Field(min_length=1)
    name: str = ""
    hottok: str = Field(min_length=1)
    alert_email: str | None = None
    templates_dir: str | None = None  # files here override the default templates by name
    affiliates: tuple[AffiliateConfig, ...] = ()

    def affiliate(self, code: str) -> AffiliateConfig | None:
        return next((a for a in self.affiliates if a.code == code), None)


class Config(_Model):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    admin: AdminConfig = AdminConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    email: EmailConfig = EmailConfig()
    producers: tuple[ProducerConfig, ...] = Field(min_length=1)
    recovery: RecoveryConfig | None = None  # sale recovery is off unless [recovery] is there
    # Where relative paths (sqlite_path, maildir, templates_dir) are anchored.
    base_dir: Path = Field(default=Path("."), exclude=True)

    def producer(self, producer_id: str) -> ProducerConfig | None:
        return next((p for p in self.producers if p.id == producer_id), None)

    @property
    def single_process(self) -> bool:
        """Ingest and the dispatcher in one process, as `delivery.workers = 0` asks."""
        return self.delivery.workers == 0

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def load_config(path: Path, environ: Mapping[str, str]) -> Config:
    """Read, resolve `env:` references, validate and cross-check; raise ConfigError."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([("(file)", f"{path} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("(file)", f"{path} is not valid TOML: {exc}")]) from None
    return parse_config(raw, environ, base_dir=path.resolve().parent)


def parse_config(raw: dict[str, Any], environ: Mapping[str, str], base_dir: Path) -> Config:
    """Validate an already-decoded config; every problem is reported in one ConfigError."""
    problems: list[tuple[str, str]] = []
    resolved = resolve_env(raw, environ, (), problems)
    if "base_dir" in resolved:  # a model field, but not a config key: the file's folder is used
        problems.append(("base_dir", "unknown key"))
        resolved = {k: v for k, v in resolved.items() if k != "base_dir"}
    config: Config | None = None
    try:
        # by_name=False: only the TOML spellings (`timeout`, not `timeout_s`) are config keys.
        config = Config.model_validate(
            {**resolved, "base_dir": base_dir}, by_alias=True, by_name=False
        )
    except ValidationError as exc:
        _add_new(problems, _validation_problems(exc))
    # Cross-checks run on the raw data too, so they are reported alongside field errors.
    _add_new(problems, cross_check(resolved))
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _add_new(problems: list[tuple[str, str]], found: list[tuple[str, str]]) -> None:
    """Append problems at paths not reported yet (a missing env var explains the rest)."""
    reported = {path for path, _ in problems}
    problems.extend(problem for problem in found if problem[0] not in reported)


def _validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    errors = exc.errors()
    locs = [tuple(error["loc"]) for error in errors]
    problems = []
    for error, loc in zip(errors, locs, strict=True):
        # A tuple whose items failed also says "should have at least 1 item after
        # validation, not 0": noise next to the real errors inside it.
        if error["type"] == "too_short" and any(
            other[: len(loc)] == loc and len(other) > len(loc) for other in locs
        ):
            continue
        problems.append(_describe(error))
    return problems


def _describe(error: Any) -> tuple[str, str]:
    # Drop pydantic's union tags ("email", "webhook" after `destinations.N`) so paths match
    # the TOML keys; the top-level `email` table keeps its name.
    loc: list[str] = []
    raw_loc = list(error["loc"])
    for index, part in enumerate(raw_loc):
        is_tag = (
            part in ("email", "webhook")
            and index >= 2
            and isinstance(raw_loc[index - 1], int)
            and raw_loc[index - 2] == "destinations"
        )
        if not is_tag:
            loc.append(str(part))
    if loc and loc[-1] == "[key]":  # a mapping's key failed: the path ends at the key
        loc.pop()
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return ".".join(loc) or "(root)", message
