"""The proof inputs kept at capture time for OpenGradient TEE checks."""
import json

from eth_hash.auto import keccak

from receipts.addon import og


def k(text: str) -> str:
    return "0x" + keccak(text.encode()).hex()


def test_request_hashes_of_each_canonical_form():
    doc = {"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                      {"role": "user", "content": "hi"}], "n": 2, "top_p": 0.5}
    hashes = og.request_hashes(doc)
    gateway = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "hi"}], "temperature": 0.0}
    assert hashes["gateway-2026-03"] == k(json.dumps(gateway, sort_keys=True))
    full = {"model": "m", "messages": [{"role": m["role"], "content": m["content"], "tool_calls": None,
                                        "tool_call_id": None, "name": None} for m in doc["messages"]],
            "temperature": 0.0, "max_tokens": None, "stop": None, "tools": None, "tool_choice": "auto"}
    assert hashes["gateway-2026-02"] == k(json.dumps(full, sort_keys=True))
    assert len(set(hashes.values())) == 2


def test_request_hashes_tolerate_odd_input():
    assert og.request_hashes(None) is None
    assert og.request_hashes({"messages": "x"}) is None
    odd = og.request_hashes({"model": "m", "messages": [{"role": "alien"}]})
    assert list(odd) == ["gateway-2026-02"]  # the older form takes any role; the current one does not
    assert og.request_hashes({"model": "m", "messages": [{"role": "user"}], "temperature": "hot"}) is None


def test_output_hash_text_and_tool_calls():
    text = {"choices": [{"message": {"content": "héllo"}, "finish_reason": "stop"}]}
    assert og.output_hash(text) == k("héllo")
    calls = [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]
    tools = {"choices": [{"message": {"content": None, "tool_calls": calls}, "finish_reason": "tool_calls"}]}
    assert og.output_hash(tools) == k(json.dumps(calls, sort_keys=True))
    assert og.output_hash({"choices": []}) is None and og.output_hash("x") is None
