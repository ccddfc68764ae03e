"""Network settings: one RPC URL or several, a quorum, and the bound on an answer."""
import pytest

from receipts.storage import config as cfg


def networks(**item):
    return cfg._validated({"networks": {"eip155:8453": item}})["networks"]


def test_one_url_or_a_list_of_them():
    (one,) = networks(rpc="http://a")
    assert (one.endpoints, one.rpc, one.quorum_size) == (("http://a",), "http://a", 1)
    (two,) = networks(rpc=["http://a", "http://b"])
    assert (two.endpoints, two.rpc, two.quorum_size) == (("http://a", "http://b"), "http://a", 2), "all must agree"
    (some,) = networks(rpc=["http://a", "http://b", "http://c"], quorum=2)
    assert some.quorum_size == 2
    (none,) = networks(confirmations=2)
    assert (none.endpoints, none.rpc) == ((), None)
    assert cfg.Network("eip155:1", "http://x").endpoints == ("http://x",), "a URL given alone is one endpoint"
    (twice,) = networks(rpc=["http://a", "http://a "])
    assert (twice.endpoints, twice.quorum_size) == (("http://a",), 1), "one node agreeing with itself is no quorum"
    with pytest.raises(cfg.ConfigError):
        networks(rpc=["http://a", "http://a"], quorum=2)


@pytest.mark.parametrize("item, words", [
    ({"rpc": ["http://a"], "quorum": 2}, "quorum must be a whole number from 1 to the number of rpc URLs (1)"),
    ({"rpc": ["http://a", "http://b"], "quorum": 0}, "quorum must be"),
    ({"rpc": ["http://a"], "quorum": "all"}, "quorum must be"),
    ({"rpc": {"url": "http://a"}}, "rpc must be a URL or a list of URLs"),
    ({"rpc": "http://a", "rpc_max_bytes": 0}, "rpc_max_bytes must be a positive number"),
])
def test_bad_values_say_what_is_wrong(item, words):
    with pytest.raises(cfg.ConfigError) as err:
        networks(**item)
    assert words in str(err.value)


def test_the_environment_gives_one_url_or_a_comma_separated_list():
    settings = cfg.Settings(networks=networks(rpc="http://a", rpc_max_bytes=1000))
    env = {"RECEIPTS_RPC_EIP155_8453": " http://x , http://y ,"}
    net = settings.network("eip155:8453", env=env)
    assert (net.endpoints, net.quorum_size, net.rpc_max_bytes) == (("http://x", "http://y"), 2, 1000)
    assert settings.network("eip155:84532", env={"RECEIPTS_RPC_EIP155_84532": "http://z"}).endpoints == ("http://z",)
    assert settings.network("eip155:8453", env={}).endpoints == ("http://a",)


def test_a_local_chain_gets_no_public_explorer_link():
    from receipts.storage.config import Network

    template = "https://basescan.org/tx/{tx}"
    assert Network("eip155:8453", ("https://mainnet.base.org",), explorer=template).explorer_link == template
    for local in ("http://127.0.0.1:8545", "http://localhost:8545", "http://[::1]:8545"):
        assert Network("eip155:8453", (local,), explorer=template).explorer_link is None, local
    mixed = Network("eip155:8453", ("http://127.0.0.1:8545", "https://mainnet.base.org"), explorer=template)
    assert mixed.explorer_link == template


def test_the_default_intercept_hosts_are_the_ones_mitm_config_yaml_lists():
    from receipts.storage import config as cfg

    assert cfg.load(cfg.DEFAULT_CONFIG).intercept_hosts == cfg.DEFAULT_AI_HOSTS
    assert cfg.load(cfg.DEFAULT_CONFIG).intercept == "known"


def test_solana_networks_keep_the_case_of_their_addresses():
    devnet = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
    (net,) = cfg._networks({devnet: {"rpc": "http://127.0.0.1:8899", "facilitators": ["9hSR6S7WPtxmTojgo6GG3k4yDPecgJY292j7xrsUGWBu"]}})
    assert (net.caip2, net.facilitators) == (devnet, ("9hSR6S7WPtxmTojgo6GG3k4yDPecgJY292j7xrsUGWBu",))
    (evm,) = cfg._networks({"eip155:8453": {"facilitators": ["0xABC"]}})
    assert evm.facilitators == ("0xabc",)
    for bad in ("solana:not-base58!", "cosmos:hub", "eip155:base"):
        with pytest.raises(cfg.ConfigError) as err:
            cfg._networks({bad: {}})
        assert "eip155:<chain id> or solana:<genesis hash>" in str(err.value)


def test_each_setting_is_declared_once_with_its_flag_and_mitmproxy_option():
    from dataclasses import fields

    from receipts.storage.config import OPTIONS, Settings

    declared = [o.setting for o in OPTIONS]
    assert sorted(declared) == sorted(f.name for f in fields(Settings))  # each field once, none missing
    flags = [o.flag for o in OPTIONS if o.flag]
    mitm = [o.mitm for o in OPTIONS if o.mitm]
    assert len(set(flags)) == len(flags) and len(set(mitm)) == len(mitm)
    # the names users already type (README, mitm_config.yaml): written here, not read from the code
    assert set(mitm) == {"receipts_data", "receipts_bodies", "receipts_durability", "receipts_stamp",
                         "receipts_capture_x402", "receipts_seal_interval", "receipts_body_max_bytes",
                         "receipts_compact_after", "receipts_compact_grace", "receipts_pin",
                         "receipts_stream_above", "receipts_max_client_connections", "receipts_header_timeout",
                         "receipts_idle_timeout"}
    assert {"--listen-host", "--listen-port", "--ca-dir", "--x402", "--intercept", "--bodies", "--durability",
            "--stamp", "--upstream-ca", "--pin", "--stream-above"} <= set(flags)


def test_a_flag_and_the_mitmproxy_option_give_the_same_sentence_and_help(tmp_path):
    from mitmproxy import exceptions
    from mitmproxy.test import taddons

    from receipts.addon.recorder import Recorder
    from support.proc import receipts_cli

    out = receipts_cli("proxy", "--seal-interval", "-1", data=tmp_path)
    assert out.returncode == 1
    rec = Recorder()
    with taddons.context(rec) as tctx:
        with pytest.raises(exceptions.OptionsError) as caught:
            tctx.configure(rec, receipts_data=str(tmp_path), receipts_seal_interval="-1")
        mitm_help = tctx.options._options["receipts_durability"].help
    rec.done()
    assert out.stderr.strip() == f"Error: {caught.value}"
    cli_help = " ".join(receipts_cli("proxy", "--help").stdout.split())
    assert " ".join(mitm_help.split()) in cli_help and "(default: strict)" in mitm_help
