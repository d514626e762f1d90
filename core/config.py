"""Typed settings for every vigil process, read once from the environment (prefix ``VIGIL_``).

Why one object: every trading parameter and cadence lives here, so an operator can see in one
place what the engine will do, and a bad value is refused at start-up with one line naming the
setting, rather than discovered mid-trade.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ExchangeKind = Literal["paper", "binanceusdm", "bybit"]


class SettingsError(RuntimeError):
    """A setting has a value the engine refuses; the message names the setting."""


class Settings(BaseSettings):
    """All settings; field ``foo_bar`` is read from ``VIGIL_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- runtime -------------------------------------------------------------------------
    home: Path = Field(Path("./.vigil"), description="Data dir of the embedded runtime.")
    database_url: str | None = Field(None, description="PostgreSQL URL; unset: embedded server.")
    redis_url: str | None = Field(None, description="Redis URL; unset: embedded server.")
    embedded_pg_port: int = Field(55432, ge=1024, le=65535)
    embedded_redis_port: int = Field(56379, ge=1024, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    process_restart_max_delay: float = Field(
        30, gt=0, description="`vigil up`: longest wait before restarting a child that died, s."
    )
    process_crash_loop_restarts: int = Field(
        5, ge=1, description="`vigil up`: this many restarts of one child within the window..."
    )
    process_crash_loop_minutes: float = Field(
        5, gt=0, description="...is a crash loop: that child is no longer restarted (paged)."
    )

    # --- exchange ------------------------------------------------------------------------
    exchange: ExchangeKind = "paper"
    exchange_url: str = Field(
        "http://127.0.0.1:8710", description="Base URL of the paper exchange."
    )
    api_key: SecretStr = SecretStr("paper")
    api_secret: SecretStr = SecretStr("paper")
    testnet: bool = False
    exchange_timeout_ms: int = Field(10_000, ge=100, le=120_000)
    paper_dialect: Literal["binance", "bybit"] = Field(
        "binance",
        description="Which venue the paper exchange speaks (VIGIL_EXCHANGE=paper): "
        "binance (USD-M) or bybit (v5 linear). Also the default of `vigil sim --dialect`.",
    )
    exchange_visibility_timeout: float = Field(
        3.0,
        gt=0,
        le=60,
        description="Bybit: longest wait for a just-opened position to show up before its "
        "stop is placed (polled, growing intervals), s.",
    )
    exchanges: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Venues of this deployment, e.g. binance,bybit (default: the one venue of "
        "VIGIL_EXCHANGE). Each venue other than that one reads VIGIL_<VENUE>_EXCHANGE, "
        "_EXCHANGE_URL, _API_KEY, _API_SECRET, _TESTNET, _PAPER_DIALECT (core/venues.py).",
    )
    venue_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Venues whose signal, order and stop tasks go to queues of their own "
        "(signals.bybit, orders.bybit, stops.bybit), taken by `vigil worker --venue bybit`. "
        "Default none: every worker takes every venue's tasks from the shared queues.",
    )

    # --- signals -------------------------------------------------------------------------
    signal_url: str | None = Field(
        None, description="The signal WebSocket (ws:// or wss://); unset: no ingest."
    )
    signal_token: SecretStr | None = Field(
        None, description="Sent as `Authorization: Bearer <token>` when the ingest connects."
    )
    wave_interval: int = Field(900, ge=1, le=86_400, description="Wave window, seconds.")
    wave_grace: int = Field(30, ge=0, le=3_600, description="Wait after a window closes, s.")
    signal_max_frame_bytes: int = Field(
        65_536, ge=256, description="Larger signal frames are rejected (the socket stays up)."
    )
    signal_reject_unknown_fields: bool = Field(
        False,
        description=(
            "Reject a signal carrying fields beyond the contract's (default: accept it and "
            "record the extra field names on its event)."
        ),
    )
    signal_reconnect_min_seconds: float = Field(
        0.5, gt=0, description="First wait before reconnecting the signal socket; doubles."
    )
    signal_reconnect_max_seconds: float = Field(
        30, gt=0, description="Longest wait between two signal socket reconnects, s."
    )
    signal_auth_retry_seconds: float = Field(
        60, gt=0, description="Longest wait between retries while the signal token is refused."
    )
    signal_ping_seconds: float = Field(
        20, gt=0, description="WebSocket ping cadence; no pong within half of it: reconnect."
    )
    signal_sim_port: int = Field(
        8730, ge=1, le=65535, description="Port of `vigil up --with-signal-sim` (if free)."
    )
    wave_max_delay: int = Field(
        300, ge=1, description="A wave not processed this long after its deadline expires, s."
    )
    wave_stall_seconds: float = Field(
        120, gt=0, description="A wave in processing without progress this long is resumed, s."
    )
    wave_dispatch_interval: float = Field(
        5, gt=0, description="Beat cadence of the due-wave dispatcher (fallback of the ingest)."
    )
    signal_score_min: Decimal = Field(
        Decimal("0"), description="Lowest score_week/score_month accepted (else rejected)."
    )
    signal_score_max: Decimal = Field(
        Decimal("100"), description="Highest score_week/score_month accepted (else rejected)."
    )

    # --- API and Flower ------------------------------------------------------------------
    api_token: SecretStr | None = None
    api_port: int = Field(8720, ge=1, le=65535)
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_address: str = Field("127.0.0.1", description="0.0.0.0 to serve beyond this host.")
    flower_user: str = "vigil"
    flower_password: SecretStr = SecretStr("vigil")
    api_host: str = Field("127.0.0.1", description="Interface of `vigil api`; 0.0.0.0 to serve.")
    health_beat_stale_seconds: float = Field(
        60, gt=0, description="/health fails when beat's heartbeat is older than this, s."
    )
    health_ingest_stale_seconds: float = Field(
        60, gt=0, description="/health fails when the ingest heartbeat is older than this, s."
    )
    health_queue_stale_seconds: float = Field(
        120,
        gt=0,
        description="/health fails when a queue's oldest waiting message is older than this, s "
        "(no worker takes that queue's tasks).",
    )
    health_holder_stall_seconds: float = Field(
        30,
        gt=0,
        description="/health fails when a message a worker received has been held this long "
        "(from its receipt, or its ETA) and no worker whose main loop beat within this long "
        "holds it: a stalled worker sits on it, s.",
    )
    health_interrupted_max_seconds: float = Field(
        300, gt=0, description="/health fails when an opening is interrupted longer, s."
    )
    health_check_timeout: float = Field(5, gt=0, description="Per-component /health timeout, s.")
    health_cache_seconds: float = Field(
        3, ge=0, description="Reuse one exchange read for /health and /metrics this long, s."
    )
    api_public_reads: bool = Field(
        False,
        description="With VIGIL_API_TOKEN set, let GET routes answer without it "
        "(/health and /metrics always do).",
    )

    # --- alerts ----------------------------------------------------------------------------
    alert_webhook_url: SecretStr | None = Field(
        None, description="Generic webhook: each alert is POSTed there as JSON."
    )
    alert_telegram_bot_token: SecretStr | None = None
    alert_telegram_chat_id: str | None = None
    alert_telegram_api_url: str = Field(
        "https://api.telegram.org", description="Telegram Bot API base URL."
    )
    alert_delivery_interval: float = Field(5, gt=0, description="Beat cadence of delivery, s.")
    alert_dedup_seconds: float = Field(
        300, ge=0, description="Same kind+symbol within this window: one alert, rest counted."
    )
    alert_rate_limit: int = Field(20, ge=1, description="Most alerts sent per rate window.")
    alert_rate_window_seconds: float = Field(60, gt=0)
    alert_max_attempts: int = Field(8, ge=1, description="Delivery tries before giving up.")
    alert_retry_base_seconds: float = Field(5, gt=0, description="First retry delay; doubles.")
    alert_retry_max_seconds: float = Field(600, gt=0)
    alert_http_timeout: float = Field(5, gt=0)
    alert_max_age_hours: float = Field(
        24, gt=0, description="Undelivered alerts older than this are given up."
    )
    deadman_url: SecretStr | None = Field(
        None,
        description="Dead-man's switch (healthchecks.io convention): beat GETs this URL every "
        "VIGIL_DEADMAN_INTERVAL while all is well, and URL/fail while a part is down.",
    )
    deadman_interval: float = Field(60, gt=0, description="Cadence of the dead-man's ping, s.")
    watchdog_interval: float = Field(
        10, gt=0, description="Cadence at which the API and beat evaluate health for paging, s."
    )
    page_confirm_seconds: float = Field(
        20, ge=0, description="A health component pages once failing this long, s."
    )
    page_repeat_seconds: float = Field(
        1800, gt=0, description="A component still down pages again after this long, s."
    )
    exchange_read_failure_cycles: int = Field(
        3, ge=1, description="Consecutive failed guardian reads of the exchange that page."
    )

    # --- position sizing and risk --------------------------------------------------------
    position_size_usdt: Decimal = Field(Decimal("200"), gt=0)
    leverage: int = Field(10, ge=1, le=125)
    margin_mode: Literal["isolated", "cross"] = "cross"
    stop_loss_percent: Decimal = Field(Decimal("2.0"), gt=0, lt=100)
    emergency_stop_percent: Decimal = Field(Decimal("10.0"), gt=0, lt=100)
    max_trades_per_wave: int = Field(5, ge=0)
    wave_buffer: int = Field(3, ge=0)
    max_open_positions: int = Field(30, ge=0)
    max_exposure_usdt: Decimal = Field(Decimal("10000"), gt=0)
    min_score_week: Decimal = Field(Decimal("0"))
    min_score_month: Decimal = Field(Decimal("0"))
    stoplist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Symbols never traded (comma-separated)."
    )
    taker_fee_percent: Decimal = Field(Decimal("0.05"), ge=0)
    entry_fill_timeout: float = Field(10, gt=0, description="Wait for a market entry fill, s.")
    stop_place_attempts: int = Field(3, ge=1, description="Tries before an entry is rolled back.")
    openings_pause_seconds: int = Field(300, ge=1, description="Pause after insufficient funds.")
    venue_outage_pause_seconds: float = Field(
        300,
        gt=0,
        description="Openings pause once the venue has answered 503 / 10016 this long.",
    )

    # --- trailing stop -------------------------------------------------------------------
    trailing_activation_percent: Decimal = Field(Decimal("1.5"), gt=0)
    trailing_callback_percent: Decimal = Field(Decimal("0.5"), gt=0)
    trailing_breakeven_percent: Decimal | None = Field(None, gt=0)
    trailing_time_activation_minutes: int | None = Field(None, ge=1)
    trailing_min_step_percent: Decimal = Field(Decimal("0.1"), ge=0)
    trailing_min_update_interval: float = Field(2.0, ge=0, description="Per symbol, seconds.")
    trailing_heartbeat_stale_minutes: int = Field(5, ge=1)
    trailing_time_activation_min_profit_percent: Decimal = Field(
        Decimal("0"), ge=0, description="Time-based activation needs more profit than this, %."
    )
    trailing_min_distance_percent: Decimal = Field(
        Decimal("0.1"),
        gt=0,
        lt=100,
        description="A moved stop stays this % away from the last price (else it would "
        "trigger at once and the exchange refuses it).",
    )
    trailing_sweep_interval: float = Field(
        15, gt=0, description="Beat cadence re-deciding trailing stops no tick woke up, s."
    )

    # --- price path ----------------------------------------------------------------------
    price_pending_ttl: float = Field(
        30, gt=0, description="A queued price task that never ran stops blocking its symbol, s."
    )
    price_task_batch: int = Field(
        16,
        ge=1,
        description="At most this many symbols of one price frame per price task, their runs"
        " overlapped in threads (a burst's last move does not wait behind the others); 1: one"
        " task per symbol.",
    )
    price_task_slots: int = Field(
        2,
        ge=1,
        description="A price frame's symbols are spread over at least this many tasks (the"
        " stops pool processes that can run them at once).",
    )
    price_task_spread_from: int = Field(
        2,
        ge=1,
        description="A price frame of fewer symbols than this rides in one task (one task's"
        " Celery cost for the frame, its runs overlapped in one process); from this many on it"
        " is spread over VIGIL_PRICE_TASK_SLOTS tasks. 2: every frame of two or more spread.",
    )
    price_band_refresh_interval: float = Field(
        30, gt=0, description="The ingest re-reads every band this often (missed announcements)."
    )
    price_stream_backoff_max: float = Field(
        30, gt=0, description="Longest wait between two reconnections of an exchange stream, s."
    )
    price_feed_stale_seconds: float = Field(
        10,
        gt=0,
        description="/health fails price_feed when no mark price arrived for this long, s "
        "(only while positions are open).",
    )

    # --- aged positions ------------------------------------------------------------------
    aged_max_age_hours: Decimal = Field(Decimal("3"), gt=0)
    aged_grace_hours: Decimal = Field(Decimal("8"), ge=0)
    aged_loss_step_percent_per_hour: Decimal = Field(Decimal("0.5"), ge=0)
    aged_acceleration_after_hours: Decimal = Field(Decimal("10"), ge=0)
    aged_acceleration_factor: Decimal = Field(Decimal("1.2"), ge=1)
    aged_max_loss_percent: Decimal = Field(Decimal("10"), gt=0)
    aged_close_retry_seconds: float = Field(
        5, gt=0, description="Wait after a failed aged close; doubles with each failure."
    )
    aged_close_retry_max_seconds: float = Field(
        60, gt=0, description="Longest wait between two aged close attempts, s."
    )
    aged_close_alert_attempts: int = Field(
        3, ge=1, description="Failed aged close attempts before a critical alert."
    )

    # --- guardians (beat cadences, seconds) ----------------------------------------------
    protection_interval: float = Field(30, gt=0)
    reconciliation_interval: float = Field(60, gt=0)
    zombie_interval: float = Field(120, gt=0)
    aged_interval: float = Field(60, gt=0)
    recovery_interval: float = Field(
        10, gt=0, description="Cadence of the sweep that drives interrupted openings on, s."
    )
    orphan_cleanup_interval: float = Field(3600, gt=0)
    heartbeat_interval: float = Field(15, gt=0)
    event_retention_days: int = Field(90, ge=1, description="Events older than this are purged.")
    critical_event_retention_days: int = Field(365, ge=1)
    event_retention_interval: float = Field(3600, gt=0)
    unprotected_alert_seconds: float = Field(60, gt=0)
    intermediate_state_grace_seconds: float = Field(120, gt=0)
    intermediate_state_takeover_seconds: float = Field(
        5,
        gt=0,
        description=(
            "An opening past its entry (entry_placed, pending_sl, rollback) whose symbol lock "
            "is free is taken over by recovery after this long, s."
        ),
    )
    protection_mark_buffer_percent: Decimal = Field(
        Decimal("0.5"),
        gt=0,
        lt=100,
        description="A protection stop that would trigger at once goes this % beyond the mark.",
    )
    guardian_lock_wait_seconds: float = Field(
        2.0,
        gt=0,
        description="A guardian waits this long for a busy symbol lock, then leaves the "
        "symbol to its next cycle.",
    )
    zombie_alert_threshold: int = Field(
        10, ge=0, description="Zombie orders found in one cycle above which ZOMBIE_ALERT fires."
    )
    zombie_cancel_attempts: int = Field(
        3, ge=1, description="Tries per zombie cancel on retryable errors (with backoff)."
    )
    zombie_stale_entry_seconds: float = Field(
        600,
        gt=0,
        description="A plain entry order older than this on a symbol without a position is "
        "a zombie.",
    )

    # --- Celery --------------------------------------------------------------------------
    task_soft_time_limit: int = Field(120, ge=1)
    task_time_limit: int = Field(180, ge=2)
    broker_visibility_timeout: int = Field(300, ge=60)
    task_max_attempts: int = Field(5, ge=1)

    # --- locks ---------------------------------------------------------------------------
    lock_timeout: float = Field(
        30,
        gt=0,
        description="A lock holder that shows no progress for this long stops renewing its "
        "lock (which then expires after VIGIL_LOCK_TTL), s.",
    )
    lock_blocking_timeout: float = Field(10, gt=0)
    lock_ttl: float = Field(
        5,
        gt=0,
        description="Lifetime of a symbol lock and of a running price task's pending flag; "
        "the holder renews it every third of it, so a dead holder frees its symbol this fast, s.",
    )

    @field_validator("stoplist", mode="before")
    @classmethod
    def _split_stoplist(cls, value: object) -> object:
        """Accept ``BTCUSDT,ETHUSDT`` from the environment as well as a JSON list."""
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                import json

                return json.loads(stripped)
            return [s.strip().upper() for s in stripped.split(",") if s.strip()]
        return value

    @field_validator("exchanges", "venue_queues", mode="before")
    @classmethod
    def _split_exchanges(cls, value: object) -> object:
        """``binance,bybit`` -> ``["binance", "bybit"]``; each must be a venue vigil knows."""
        if isinstance(value, str):
            value = [s.strip().lower() for s in value.split(",") if s.strip()]
        if isinstance(value, list):
            unknown = [v for v in value if v not in ("binance", "bybit")]
            if unknown:
                raise ValueError(f"unknown venue {unknown[0]!r}: binance or bybit")
            if len(set(value)) != len(value):
                raise ValueError("a venue is listed twice")
        return value

    @field_validator("task_time_limit")
    @classmethod
    def _hard_limit_above_soft(cls, value: int, info: object) -> int:
        return _above_setting(
            value, info, "task_soft_time_limit", "must be greater than VIGIL_TASK_SOFT_TIME_LIMIT"
        )

    @field_validator("broker_visibility_timeout")
    @classmethod
    def _visibility_above_hard_limit(cls, value: int, info: object) -> int:
        return _above_setting(
            value,
            info,
            "task_time_limit",
            "must exceed VIGIL_TASK_TIME_LIMIT, or long tasks run twice",
        )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()


def _above_setting(value: int, info: object, other: str, message: str) -> int:
    """A limit that only means something above another (already validated) one: refused with
    ``message`` unless it is greater (the other one, if invalid itself, is reported alone)."""
    floor = getattr(info, "data", {}).get(other)
    if floor is not None and value <= floor:
        raise ValueError(message)
    return value


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = first.get("loc", ())
    name = "VIGIL_" + str(loc[0]).upper() if loc else "VIGIL_?"
    return f"invalid setting {name}: {first.get('msg', 'invalid value')}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise SettingsError naming the bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except SourceError as exc:
        raise SettingsError(str(exc).split("\n")[0]) from None


def env_example() -> str:
    """The text of .env.example: every setting, its default, and what it is for."""
    lines = [
        "# vigil settings: environment variables with the VIGIL_ prefix (or a .env file).",
        "# Every setting with its default; uncomment to change. Generated from core/config.py.",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        if isinstance(default, list):
            default = ",".join(default)
        shown = "" if default is None else str(default)
        if field.description:
            lines.append(f"# {field.description}")
        lines.append(f"# VIGIL_{name.upper()}={shown}")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings instance (tests call ``get_settings.cache_clear()``)."""
    return load_settings()
