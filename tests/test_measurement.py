"""Measurement truth (issue 14): the inference adapters against what the servers' own metrics code prints.

Each page below is derived from the named server's source as cited; values are the test's own.
"""

from __future__ import annotations

from collectors.inference.mapping import parse

from .test_inference import page


def test_14_trtllm_undefined_model_label_takes_the_configured_model():
    # tensorrt_llm/serve/openai_server.py labels every series model_name="undefined" (hard-coded)
    text = page("trtllm").replace('model_name="llama-3.1-70b"', 'model_name="undefined"')
    kind, (r,) = parse(text, "auto", "llama-3.1-70b-instruct")
    assert kind == "trtllm" and r.model == "llama-3.1-70b-instruct"
    assert (r.prompt_tokens, r.generation_tokens) == (26000.0, 17600.0)
    assert r.requests == {"stop": 88.0}
    empty = page("trtllm").replace('model_name="llama-3.1-70b"', 'model_name=""')
    assert parse(empty, "auto", "m")[1][0].model == "m"


def test_15_vllm_without_inter_token_latency_falls_back_to_time_per_output_token():
    # vLLM <= 0.10 and the V0 engine (vllm/engine/metrics.py) have vllm:time_per_output_token_seconds only
    text = page("vllm").replace("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
    _, (r,) = parse(text)
    assert (r.itl_sum, r.itl_count) == (750.0, 50000.0)
    # Triton's vLLM backend (model.py of triton-inference-server/vllm_backend) labels its series `model`
    triton_vllm = page("vllm").replace("model_name=", "model=")
    _, (r,) = parse(triton_vllm)
    assert r.model == "meta-llama/Llama-3.1-8B-Instruct" and r.prompt_tokens == 1000.0


def test_16_a_server_before_its_first_request_is_up_without_token_fields():
    # SGLang creates its token counters on the first request (python/sglang/srt/metrics/collector.py); its
    # gauges are there from the start
    fresh = ("# HELP sglang:num_running_reqs The number of running requests.\n"
             "# TYPE sglang:num_running_reqs gauge\n"
             'sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.0\n'
             "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n"
             "# TYPE sglang:num_queue_reqs gauge\n"
             'sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.0\n')
    assert parse(fresh) == ("sglang", [])
    # a configured server type whose series are absent altogether is still an error
    import pytest

    with pytest.raises(ValueError, match="no vllm series"):
        parse(fresh, "vllm")
