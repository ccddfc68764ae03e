"""The proof inputs kept at capture time for OpenGradient TEE checks."""
import json

from eth_hash.auto import keccak

from addon import og


def k(text: str) -> str:
    return "0x" + keccak(text.encode()).hex()


def test_request_hashes_of_each_canonical_form():
    doc = {"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                      {"role": "user", "content": "hi"}], "n": 2, "top_p": 0.5}
    hashes = og.request_hashes(doc)
    gateway = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "hi"}], "temperature": 0.0}
    assert hashes["gateway"] == k(json.dumps(gateway, sort_keys=True))
    assert hashes["subset"] == k(json.dumps({"model": "m", "messages": doc["messages"]}, sort_keys=True))
    assert hashes["body"] == k(json.dumps(doc, sort_keys=True))
    assert len(set(hashes.values())) == 3


def test_request_hashes_tolerate_odd_input():
    assert og.request_hashes(None) is None
    assert og.request_hashes({"messages": "x"}) == {"body": k(json.dumps({"messages": "x"}, sort_keys=True))}
    odd = og.request_hashes({"model": "m", "messages": [{"role": "alien"}], "temperature": "hot"})
    assert "gateway" not in odd and "subset" in odd


def test_output_hash_text_and_tool_calls():
    text = {"choices": [{"message": {"content": "héllo"}, "finish_reason": "stop"}]}
    assert og.output_hash(text) == k("héllo")
    calls = [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]
    tools = {"choices": [{"message": {"content": None, "tool_calls": calls}, "finish_reason": "tool_calls"}]}
    assert og.output_hash(tools) == k(json.dumps(calls, sort_keys=True))
    assert og.output_hash({"choices": []}) is None and og.output_hash("x") is None
