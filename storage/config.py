"""Settings: `mitm_config.yaml`, then environment, then command-line flags (or mitmproxy `--set`).

Every setting is documented line by line in mitm_config.yaml at the repository root; this module
holds the defaults and the validation, so that a bad value gives one sentence a user can act on.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BODY_MODES = ("none", "hash", "full")
PIN_MODES = ("enforce", "record", "off")
DURABILITY = ("full", "strict", "relaxed")
INTERCEPT_MODES = ("known", "all")
# The HTTPS hosts the proxy opens by default (capture.hosts): the inference APIs that are known, and loopback
# (local servers and gateways). Every other HTTPS host passes through as TLS, unopened.
DEFAULT_AI_HOSTS = (
    "api.openai.com",
    "*.openai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "*-aiplatform.googleapis.com",
    "bedrock-runtime.*.amazonaws.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.together.xyz",
    "api.together.ai",
    "api.fireworks.ai",
    "openrouter.ai",
    "api.deepseek.com",
    "api.x.ai",
    "api.cohere.com",
    "api.cohere.ai",
    "api.perplexity.ai",
    "api.cerebras.ai",
    "api.deepinfra.com",
    "router.huggingface.co",
    "api-inference.huggingface.co",
    "*.opengradient.ai",
    "localhost",
    "127.0.0.1",
    "::1",
)
DEFAULT_AI_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/embeddings",
    "/chat/completions",
)
# the repository's mitm_config.yaml (storage/ beside it); installed, the copy in the receipts package
# (storage/ is receipts/storage/ there; receipts/mitm_config.yaml links to the root file in a checkout)
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "mitm_config.yaml"


class ConfigError(ValueError):
    """A setting is wrong; the message is one sentence for the user."""


@dataclass(frozen=True)
class Rule:
    """Extra traffic to record: a host glob and a path glob (fnmatch, case-insensitive host)."""

    host: str = "*"
    path: str = "*"

    def matches(self, host: str, path: str) -> bool:
        return fnmatch.fnmatch(host.lower(), self.host.lower()) and fnmatch.fnmatch(path, self.path)


@dataclass(frozen=True)
class Asset:
    network: str
    address: str
    symbol: str
    decimals: int


@dataclass(frozen=True)
class Network:
    """A chain the verifier reads: CAIP-2 id, JSON-RPC endpoints, confirmations, known facilitators."""

    caip2: str
    endpoints: tuple[str, ...] = ()  # JSON-RPC URLs (a single URL string is taken as one)
    confirmations: int = 1
    facilitators: tuple[str, ...] = ()
    scan_blocks: int = 10_000  # how far back log scans look (settlements without a tx hash, refunds)
    deadline_grace: float = 600.0  # seconds past validBefore before an unsettled payment is risky
    rpc_timeout: float = 10.0  # seconds to wait for one JSON-RPC answer (then retried with backoff)
    explorer: str | None = None  # block explorer URL of a transaction, `{tx}` standing for its hash (receipts serve)
    quorum: int | None = None  # endpoints that must agree for `passed` (None: all of them)
    rpc_max_bytes: int = 64 << 20  # the biggest JSON-RPC answer read (bigger: the node is at fault)

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            object.__setattr__(self, "endpoints", (self.endpoints,))
        elif self.endpoints is None:
            object.__setattr__(self, "endpoints", ())

    @property
    def rpc(self) -> str | None:
        """The first endpoint: what readers that trust one node use (OpenGradient, the registry pin)."""
        return self.endpoints[0] if self.endpoints else None

    @property
    def local(self) -> bool:
        """Every RPC endpoint is on this machine (a test chain, a fork): its transactions are on no public chain."""
        hosts = [urlsplit(u).hostname or "" for u in self.endpoints]
        return bool(hosts) and all(h == "localhost" or h.startswith("127.") or h == "::1" for h in hosts)

    @property
    def explorer_link(self) -> str | None:
        """The explorer template to link transactions with: none for a local chain (a public explorer has
        no such transaction)."""
        return None if self.local else self.explorer

    @property
    def quorum_size(self) -> int:
        """How many endpoints must give the same evidence for `passed`."""
        return self.quorum or len(self.endpoints)

    @property
    def env_name(self) -> str:
        """RECEIPTS_RPC_EIP155_8453 overrides the RPC URLs of eip155:8453 (comma-separated)."""
        return "RECEIPTS_RPC_" + "".join(c if c.isalnum() else "_" for c in self.caip2).upper()


def endpoint_list(value) -> tuple[str, ...]:
    """RPC URLs from a setting: one URL, a comma-separated list of them, or a list. A URL named twice
    counts once (one node agreeing with itself is not a quorum)."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return tuple(dict.fromkeys(u for u in (str(x).strip() for x in items) if u))


@dataclass(frozen=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    data_dir: str = "./data"
    ca_dir: str | None = None  # None: <data_dir>/ca
    capture_x402: bool = True
    ai_paths: tuple[str, ...] = DEFAULT_AI_PATHS
    rules: tuple[Rule, ...] = ()
    intercept: str = "known"  # known: open only intercept_hosts, rules' hosts and learned x402 hosts
    intercept_hosts: tuple[str, ...] = DEFAULT_AI_HOSTS
    bodies: str = "hash"
    body_max_bytes: int = 1 << 20
    durability: str = "strict"
    stamp_receipt_id: bool = True
    upstream_ca: str | None = None
    seal_interval: float = 1.0
    compact_after: int = 64
    compact_grace: float = 60.0
    stream_bodies_above: int = 4 << 20  # bodies of recorded calls larger (or of unknown length) stream through
    max_client_connections: int = 256  # open connections per client address; more are closed at once
    header_timeout: float = 20.0  # seconds from connect to a request's complete headers
    idle_timeout: float = 120.0  # seconds a kept-alive connection may wait for its next request
    assets: tuple[Asset, ...] = ()
    networks: tuple[Network, ...] = ()
    # OpenGradient: the TEE registry (and the settlement relay) on the OpenGradient chain, the blob
    # store holding batch trees, and what reverse-proxy mode does with the registry's TLS pin.
    og_network: str = "eip155:10740"
    og_registry: str | None = None
    og_relay: str | None = None
    og_blob_url: str | None = None
    og_pin: str = "enforce"
    og_anchor_deadline: float = 1200.0  # seconds after tee_timestamp by which a proof must be anchored

    def network(self, caip2: str | None, env: Mapping[str, str] | None = None) -> Network | None:
        """The configured network (RPC URLs overridden from the environment), if any."""
        env = os.environ if env is None else env
        found = next((n for n in self.networks if n.caip2 == caip2), None)
        if caip2 and found is None and env.get(Network(caip2).env_name):
            found = Network(caip2)
        if found and env.get(found.env_name):
            found = replace(found, endpoints=endpoint_list(env[found.env_name]))
        return found

    @property
    def ca_path(self) -> Path:
        return Path(self.ca_dir) if self.ca_dir else Path(self.data_dir) / "ca"

    @property
    def ca_cert(self) -> Path:
        """The proxy's CA certificate (mitmproxy's name for it in its confdir, ca_path): what clients trust."""
        return self.ca_path / "mitmproxy-ca-cert.pem"

    def is_ai_call(self, host: str, path: str) -> str | None:
        """Why this request counts as an AI call ("path" or "rule"), or None."""
        bare = path.split("?", 1)[0]
        if any(bare.endswith(p) for p in self.ai_paths):
            return "path"
        if any(r.matches(host, bare) for r in self.rules):
            return "rule"
        return None

    def asset(self, network: str | None, address: str | None) -> Asset | None:
        """The configured token at this address (on this network), if known."""
        for a in self.assets:
            if address and a.address.lower() == address.lower() and (network is None or a.network == network):
                return a
        return None


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}.")


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def _port(value) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"listen_port must be a number from 0 to 65535, not {value!r}.")
    return port


def _host(value) -> str:
    text = str(value)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if text != "localhost":
            raise ConfigError(f"listen_host must be an IP address such as 127.0.0.1, not {value!r}.") from None
    return text


def _positive(name: str, value, kind=float):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = -1
    if number <= 0:
        raise ConfigError(f"{name} must be a positive number, not {value!r}.")
    return number


def _rules(value) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("capture.rules must be a list of {host, path} entries.")
    out = []
    for item in value:
        if isinstance(item, str):  # "host/path" shorthand, as on the command line
            host, _, path = item.partition("/")
            item = {"host": host or "*", "path": "/" + path if path else "*"}
        if not isinstance(item, dict) or set(item) - {"host", "path"}:
            raise ConfigError(f"each capture rule needs only host and/or path, not {item!r}.")
        out.append(Rule(str(item.get("host", "*")), str(item.get("path", "*"))))
    return tuple(out)


def _hosts(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(h, str) and h.strip() and "/" not in h for h in value):
        raise ConfigError("capture.hosts must be a list of host names or globs (api.example.com, *.example.com).")
    return tuple(h.strip().lower() for h in value)


def _paths(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/") for p in value):
        raise ConfigError("capture.ai_paths must be a list of paths starting with '/'.")
    return tuple(value)


def _assets(value) -> tuple[Asset, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("assets must be a list of {network, address, symbol, decimals} entries.")
    out = []
    for item in value:
        try:
            out.append(
                Asset(str(item["network"]), str(item["address"]), str(item.get("symbol", "")), int(item["decimals"]))
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"asset entry {item!r} needs network, address and an integer decimals.") from None
    return tuple(out)


_SUPPORTED_NETWORK = re.compile(r"eip155:[0-9]+|solana:[1-9A-HJ-NP-Za-km-z]{32,44}")


def _networks(value) -> tuple[Network, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError("networks must map CAIP-2 ids (eip155:8453) to {rpc, confirmations, facilitators}.")
    out = []
    for caip2, item in value.items():
        item = item or {}
        if not _SUPPORTED_NETWORK.fullmatch(str(caip2)) or not isinstance(item, dict):
            raise ConfigError(
                f"network {caip2!r} must be an eip155:<chain id> or solana:<genesis hash> key with a "
                f"mapping of settings."
            )
        solana = str(caip2).startswith("solana:")  # (its addresses are base58: their case is part of them)
        explorer = _explorer(caip2, item.get("explorer"))
        endpoints, quorum = _endpoints(caip2, item.get("rpc"), item.get("quorum"))
        max_bytes = _positive(f"network {caip2!r}: rpc_max_bytes", item.get("rpc_max_bytes", 64 << 20), int)
        try:
            out.append(
                Network(
                    str(caip2),
                    endpoints,
                    int(item.get("confirmations", 1)),
                    tuple(str(f) if solana else str(f).lower() for f in item.get("facilitators") or ()),
                    int(item.get("scan_blocks", 10_000)),
                    float(item.get("deadline_grace", 600)),
                    float(item.get("rpc_timeout", 10)),
                    explorer,
                    quorum,
                    max_bytes,
                )
            )
        except (TypeError, ValueError):
            raise ConfigError(
                f"network {caip2!r}: confirmations and scan_blocks must be whole numbers, deadline_grace a number."
            ) from None
    return tuple(out)


def _endpoints(caip2, rpc, quorum) -> tuple[tuple[str, ...], int | None]:
    """A network's RPC URLs (one, or a list) and its quorum (1 to their number; None: all of them)."""
    if rpc is not None and not isinstance(rpc, (str, list)):
        raise ConfigError(f"network {caip2!r}: rpc must be a URL or a list of URLs, not {rpc!r}.")
    endpoints = endpoint_list(rpc)
    if quorum is None:
        return endpoints, None
    if isinstance(quorum, bool) or not isinstance(quorum, int) or not 1 <= quorum <= max(1, len(endpoints)):
        raise ConfigError(
            f"network {caip2!r}: quorum must be a whole number from 1 to the number of rpc URLs "
            f"({len(endpoints)}), not {quorum!r}."
        )
    return endpoints, quorum


def _explorer(caip2, value) -> str | None:
    if value in (None, ""):
        return None
    text = str(value)
    if not text.startswith(("https://", "http://")) or "{tx}" not in text:
        raise ConfigError(
            f"network {caip2!r}: explorer must be an http(s) URL with {{tx}} where the transaction "
            f"hash goes, such as https://basescan.org/tx/{{tx}}, not {value!r}."
        )
    return text


def _caip2(name: str, value) -> str:
    text = str(value)
    if not text.startswith("eip155:") or not text[7:].isdigit():
        raise ConfigError(f"{name} must be a CAIP-2 id such as eip155:10740, not {value!r}.")
    return text


def _address_or_none(name: str, value) -> str | None:
    if value in (None, ""):
        return None
    text = str(value)
    if len(text) != 42 or not text.startswith("0x") or any(c not in "0123456789abcdefABCDEF" for c in text[2:]):
        raise ConfigError(f"{name} must be a 0x-prefixed 20-byte address, not {value!r}.")
    return text


def _flatten(raw: dict) -> dict:
    """The YAML file nests capture settings; flags and `--set` use flat names."""
    flat = {k: v for k, v in raw.items() if k not in ("capture", "opengradient")}
    og = raw.get("opengradient") or {}
    if not isinstance(og, dict):
        raise ConfigError("opengradient must be a mapping with network, registry, relay, blob_url and pin.")
    unknown = set(og) - {"network", "registry", "relay", "blob_url", "pin", "anchor_deadline"}
    if unknown:
        raise ConfigError(
            f"unknown opengradient setting {sorted(unknown)[0]!r} "
            "(known: network, registry, relay, blob_url, pin, anchor_deadline)."
        )
    flat.update({f"og_{k}": v for k, v in og.items()})
    capture = raw.get("capture") or {}
    if not isinstance(capture, dict):
        raise ConfigError("capture must be a mapping with x402, ai_paths, rules, intercept and hosts.")
    names = {
        "x402": "capture_x402",
        "ai_paths": "ai_paths",
        "rules": "rules",
        "intercept": "intercept",
        "hosts": "intercept_hosts",
    }
    for key, target in names.items():
        if key in capture:
            flat[target] = capture[key]
    unknown = set(capture) - set(names)
    if unknown:
        raise ConfigError(f"unknown capture setting {sorted(unknown)[0]!r} (known: {', '.join(names)}).")
    return flat


@dataclass(frozen=True)
class Option:
    """One setting, declared once: the Settings field it sets (its name in mitm_config.yaml, flattened), how a
    value is checked, and — when users may give it without the file — its `receipts proxy` flag and its
    mitmproxy option (`--set receipts_…=…`). Flags, mitmproxy options and validation are made from OPTIONS."""

    setting: str
    check: Callable[[Any], Any]
    help: str = ""
    flag: str | None = None  # `receipts proxy --…` (None: only in the file, or a flag every command has)
    mitm: str | None = None  # the mitmproxy option (None: only in the file, or mitmproxy has its own)
    boolean: bool = False  # --flag / --no-flag
    choices: tuple[str, ...] | None = None  # what the flag takes, checked by argparse (completion offers them)

    def help_text(self) -> str:
        """The help, with the default (from Settings) unless the help says it."""
        default = next(f.default for f in fields(Settings) if f.name == self.setting)
        if default is None or "default" in self.help:
            return self.help
        shown = str(default).lower() if isinstance(default, bool) else default
        return f"{self.help} (default: {shown})"


def _str_or_none(value) -> str | None:
    return None if value in (None, "") else str(value)


OPTIONS = (
    Option("listen_host", _host, "address to listen on", flag="--listen-host"),
    Option("listen_port", _port, "port to listen on", flag="--listen-port"),
    Option("data_dir", str, "data directory for the journal (default: $RECEIPTS_DATA or ./data)", mitm="receipts_data"),
    Option("ca_dir", _str_or_none, "where the proxy's CA lives (default: DATA/ca)", flag="--ca-dir"),
    Option(
        "capture_x402",
        lambda v: _bool("capture.x402", v),
        "record anything carrying x402 headers (--no-x402 to turn off)",
        flag="--x402",
        mitm="receipts_capture_x402",
        boolean=True,
    ),
    Option("ai_paths", _paths),
    Option("rules", _rules),
    Option(
        "intercept",
        lambda v: _choice("capture.intercept", v, INTERCEPT_MODES),
        "which HTTPS hosts to open: known (the AI hosts, rules' hosts, x402 hosts seen before; others pass "
        "through as TLS) or all",
        flag="--intercept",
        choices=INTERCEPT_MODES,
    ),
    Option("intercept_hosts", _hosts),
    Option(
        "bodies",
        lambda v: _choice("bodies", v, BODY_MODES),
        "body storage: none | hash | full",
        flag="--bodies",
        mitm="receipts_bodies",
    ),
    Option(
        "body_max_bytes",
        lambda v: _positive("body_max_bytes", v, int),
        "largest body kept with --bodies full",
        flag="--body-max-bytes",
        mitm="receipts_body_max_bytes",
    ),
    Option(
        "durability",
        lambda v: _choice("durability", v, DURABILITY),
        "full | strict | relaxed: when a recorded event is on disk (see mitm_config.yaml)",
        flag="--durability",
        mitm="receipts_durability",
    ),
    Option(
        "stamp_receipt_id",
        lambda v: _bool("stamp_receipt_id", v),
        "add X-Receipt-Id to recorded responses (--no-stamp: an invisible audit)",
        flag="--stamp",
        mitm="receipts_stamp",
        boolean=True,
    ),
    Option("upstream_ca", _str_or_none, "extra CA bundle to trust for upstream servers", flag="--upstream-ca"),
    Option(
        "seal_interval",
        lambda v: _positive("seal_interval", v),
        "seconds before recorded events are visible to queries",
        flag="--seal-interval",
        mitm="receipts_seal_interval",
    ),
    Option(
        "compact_after",
        lambda v: _positive("compact_after", v, int),
        "sealed segments that trigger a fold into the tables before its 2-second timer",
        flag="--compact-after",
        mitm="receipts_compact_after",
    ),
    Option(
        "compact_grace",
        lambda v: _positive("compact_grace", v),
        "seconds a folded segment is kept before it is emptied for reuse",
        flag="--compact-grace",
        mitm="receipts_compact_grace",
    ),
    Option(
        "stream_bodies_above",
        lambda v: _positive("stream_bodies_above", v, int),
        "recorded bodies larger than this many bytes stream through",
        flag="--stream-above",
        mitm="receipts_stream_above",
    ),
    Option(
        "max_client_connections",
        lambda v: _positive("max_client_connections", v, int),
        "open connections allowed per client address",
        flag="--max-client-connections",
        mitm="receipts_max_client_connections",
    ),
    Option(
        "header_timeout",
        lambda v: _positive("header_timeout", v),
        "seconds a new connection has to send its request headers",
        flag="--header-timeout",
        mitm="receipts_header_timeout",
    ),
    Option(
        "idle_timeout",
        lambda v: _positive("idle_timeout", v),
        "seconds a kept-alive connection may wait for its next request",
        flag="--idle-timeout",
        mitm="receipts_idle_timeout",
    ),
    Option("assets", _assets),
    Option("networks", _networks),
    Option("og_network", lambda v: _caip2("opengradient.network", v)),
    Option("og_registry", lambda v: _address_or_none("opengradient.registry", v)),
    Option("og_relay", lambda v: _address_or_none("opengradient.relay", v)),
    Option("og_blob_url", lambda v: None if v in (None, "") else str(v).rstrip("/")),
    Option("og_anchor_deadline", lambda v: _positive("opengradient.anchor_deadline", v)),
    Option(
        "og_pin",
        lambda v: _choice("opengradient.pin", "off" if v is False else v, PIN_MODES),  # (YAML reads off as False)
        "with --reverse: enforce | record | off, the TEE registry's certificate pin",
        flag="--pin",
        mitm="receipts_pin",
    ),
)
_CHECKS = {o.setting: o.check for o in OPTIONS}


def _validated(values: dict) -> dict:
    unknown = set(values) - set(_CHECKS)
    if unknown:
        raise ConfigError(f"unknown setting {sorted(unknown)[0]!r}; see mitm_config.yaml for the list.")
    return {k: _CHECKS[k](v) for k, v in values.items()}


def with_extras(settings: Settings, rules: list[str] | None, ai_paths: list[str] | None) -> Settings:
    """Settings with more capture rules (`HOSTGLOB/PATHGLOB`) and AI paths, as flags add them."""
    extra_rules = _rules(list(rules)) if rules else ()
    extra_paths = _paths(list(ai_paths)) if ai_paths else ()
    return replace(settings, rules=settings.rules + extra_rules, ai_paths=settings.ai_paths + extra_paths)


def read_file(path: str | os.PathLike | None) -> dict:
    """The settings in a YAML file (flat names), validated."""
    if path is None:
        return {}
    import yaml  # (here: importing it is 13 ms of every command, and only the proxy's settings are YAML)

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist.") from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} cannot be read: {first}.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings.")
    return _validated(_flatten(raw))


def load(
    config: str | os.PathLike | None = None, overrides: dict | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < config file (mitm_config.yaml by default) < RECEIPTS_DATA < overrides (flags)."""
    env = os.environ if env is None else env
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    values = read_file(config)
    if env.get("RECEIPTS_DATA"):
        values["data_dir"] = env["RECEIPTS_DATA"]
    values.update(_validated({k: v for k, v in (overrides or {}).items() if v is not None}))
    return replace(Settings(), **values)
