import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from s2d_align.data import refiners
from s2d_align.data.key_phrases import COMPOSED_SOURCE, NoRefiner, refine_all
from s2d_align.data.manifest import KeyPhrase, Study, write_manifest
from s2d_align.data.refiners import (
    INSTRUCTION,
    CachedRefiner,
    Example,
    FewShotPool,
    HFRefiner,
    OpenAIRefiner,
    RefinementCache,
    RefinerError,
    build_refiner,
    clean_answer,
    completion_prompt,
)

POOL = FewShotPool([Example(f"finding {i}", f"Finding number {i}") for i in range(6)], "test-pool")


def test_shipped_pool_is_marked_as_an_illustration():
    pool = FewShotPool.shipped_example()
    assert "NOT radiologist gold" in pool.note
    assert len(pool.examples) == 14


def test_draw_is_reproducible_distinct_and_never_the_input():
    first = POOL.draw("finding 2", 4)
    assert first == POOL.draw("finding 2", 4)
    assert len(set(first)) == 4 and Example("finding 2", "Finding number 2") not in first
    assert len(POOL.draw("anything", 50)) == 6


def test_pool_files(tmp_path):
    jsonl = tmp_path / "pool.jsonl"
    jsonl.write_text('{"input": "a", "output": "A"}\n\n{"input": "b", "output": "B"}\n')
    assert FewShotPool.from_file(jsonl).examples == (Example("a", "A"), Example("b", "B"))
    jsonl.write_text('{"input": "a", "output": "A"}\n{oops\n')
    with pytest.raises(ValueError, match=r"pool\.jsonl:2: not valid JSON"):
        FewShotPool.from_file(jsonl)
    bad = tmp_path / "bad.json"
    bad.write_text('{"examples": [{"input": "a"}]}')
    with pytest.raises(ValueError, match="example 0 must be an object with string 'input' and 'output'"):
        FewShotPool.from_file(bad)


def test_completion_prompt_and_answer_cleaning():
    examples = [Example("effusion in left pleural", "left pleural effusion")]
    assert completion_prompt("opacity in right base", examples) == (
        f"{INSTRUCTION}\n\nInput: effusion in left pleural\nOutput: left pleural effusion\n\n"
        "Input: opacity in right base\nOutput:"
    )
    assert clean_answer(' "right basilar opacity"\nInput: next', "opacity in right base") == "right basilar opacity"
    assert clean_answer("Output: - right  basilar opacity", "x" * 20) == "right basilar opacity"
    assert clean_answer("   \n ", "x") is None
    assert clean_answer("word " * 40, "short") is None


def test_refine_all_batches_unique_descriptions():
    class Counting(NoRefiner):
        seen = []

        def refine(self, composed):
            self.seen.append(list(composed))
            return super().refine(composed)

    refiner = Counting()
    result = refine_all({"a": ["x", "y"], "b": ["y"], "c": []}, refiner)
    assert refiner.seen == [["x", "y"]]
    assert result == {"a": (KeyPhrase("x", COMPOSED_SOURCE), KeyPhrase("y", COMPOSED_SOURCE)), "b": (KeyPhrase("y", COMPOSED_SOURCE),), "c": ()}


class _Upper(CachedRefiner):
    """A back end that answers in capitals and remembers what it was asked."""

    kind = "upper"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked = []

    def _generate(self, texts):
        self.asked += texts
        yield [(index, text.upper()) for index, text in enumerate(texts)]


def test_cache_key_covers_instruction_token_limit_and_back_end(tmp_path, monkeypatch):
    cache = RefinementCache(tmp_path / "c.sqlite")
    first = _Upper("m", POOL, cache, k=2, max_tokens=16)
    assert first.refine(["small effusion"]) == [KeyPhrase("SMALL EFFUSION", "radgraph:refined:upper:m@v1")]
    again = _Upper("m", POOL, cache, k=2, max_tokens=16)
    again.refine(["small effusion"])
    assert again.asked == [] and again.stats["cached"] == 1
    longer = _Upper("m", POOL, cache, k=2, max_tokens=32)
    longer.refine(["small effusion"])
    assert longer.asked == ["small effusion"]
    other_back_end = type("_Other", (_Upper,), {"kind": "other"})("m", POOL, cache, k=2, max_tokens=16)
    other_back_end.refine(["small effusion"])
    assert other_back_end.asked == ["small effusion"]
    monkeypatch.setattr(refiners, "INSTRUCTION", INSTRUCTION + " Use British spelling.")
    reworded = _Upper("m", POOL, cache, k=2, max_tokens=16)
    reworded.refine(["small effusion"])
    assert reworded.asked == ["small effusion"]


# --------------------------------------------------------------------------- hf


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from s2d_align.models.tiny import TinySizes, build_tiny_models

    root = tmp_path_factory.mktemp("tiny")
    texts = ["small right pleural effusion", "left lower lobe opacity", "mild cardiomegaly", "no acute process"]
    studies = [
        Study(id=f"s{i}", split="train", subject_id=f"p{i}", study_id=f"s{i}", images=("x.png",), findings=t)
        for i, t in enumerate(texts * 5)
    ]
    write_manifest(root / "m.jsonl", studies)
    # untrained (random) weights: the model babbles, so every answer is a non-empty phrase to cache
    return build_tiny_models(root / "models", root / "m.jsonl", sizes=TinySizes(llm_pretrain_steps=0))["llm"]


def test_hf_refiner_batches_caches_and_resumes(tiny_llm, tmp_path):
    inputs = ["small effusion in right pleural", "opacity in left lower lobe", "cardiomegaly", "small effusion in right pleural"]
    first = HFRefiner(str(tiny_llm), POOL, RefinementCache(tmp_path / "c.sqlite"), k=2, batch_size=2, max_new_tokens=4)
    phrases = first.refine(inputs)
    assert len(phrases) == 4 and first.calls == 2  # three unique descriptions, two per batch
    assert phrases[0] == phrases[3]
    for text, phrase in zip(inputs, phrases):
        assert phrase.source in (COMPOSED_SOURCE, "radgraph:refined:hf:llm@v1")
        if phrase.source == COMPOSED_SOURCE:
            assert phrase.text == text
        else:
            assert phrase.text and phrase.text == phrase.text.strip()
    refined = first.stats["generated"]
    assert refined >= 1  # the tiny random model does answer (gibberish), so the cache path below is exercised
    assert first.stats["generated"] + first.stats["fallback"] == 4 and first.stats["cached"] == 0
    # a new run over the same cache pays nothing for what was refined
    second = HFRefiner(str(tiny_llm), POOL, RefinementCache(tmp_path / "c.sqlite"), k=2, batch_size=2, max_new_tokens=4)
    assert second.refine(inputs) == phrases
    assert second.stats["cached"] == refined
    assert second.calls == (1 if first.stats["fallback"] else 0)
    # another model or prompt size is another key
    third = HFRefiner(str(tiny_llm), POOL, RefinementCache(tmp_path / "c.sqlite"), k=3, batch_size=8, max_new_tokens=4)
    third.refine(inputs[:1])
    assert third.calls == 1 and third.stats["cached"] == 0


# --------------------------------------------------------------------------- openai


class _Server:
    """A local OpenAI-compatible endpoint whose answers a test scripts."""

    def __init__(self, script):
        self.script = script  # callable(request_number, body) -> (status, payload)
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, dict(self.headers), body))
                status, payload = server.script(len(server.requests), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(text):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


@pytest.fixture()
def server():
    servers = []

    def start(script):
        servers.append(_Server(script))
        return servers[-1]

    yield start
    for item in servers:
        item.close()


def test_openai_refiner_retries_then_succeeds_and_caches(server, tmp_path):
    def script(number, body):
        if number == 1:
            return 503, {"error": "warming up"}
        if number == 2:
            return 200, {"unexpected": True}  # not a chat completion: retried too
        return 200, _completion("Refined: " + body["messages"][-1]["content"].upper())

    endpoint = server(script)
    sleeps = []
    refiner = OpenAIRefiner(
        "served-model", endpoint.url, POOL, RefinementCache(tmp_path / "c.sqlite"), k=2, api_key="secret",
        concurrency=1, backoff=0.5, sleep=sleeps.append,
    )
    phrases = refiner.refine(["effusion in left pleural", "opacity"])
    assert phrases == [
        KeyPhrase("Refined: EFFUSION IN LEFT PLEURAL", "radgraph:refined:openai:served-model@v1"),
        KeyPhrase("Refined: OPACITY", "radgraph:refined:openai:served-model@v1"),
    ]
    assert len(endpoint.requests) == 4 and sleeps == [0.0, 1.0]  # Retry-After 0, then back-off 0.5 * 2
    path, headers, body = endpoint.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer secret"
    assert body["model"] == "served-model" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    again = OpenAIRefiner("served-model", endpoint.url, POOL, RefinementCache(tmp_path / "c.sqlite"), k=2)
    assert again.refine(["opacity", "effusion in left pleural"]) == phrases[::-1]
    assert len(endpoint.requests) == 4 and again.stats == {"cached": 2, "generated": 0, "fallback": 0}


def test_openai_refiner_failures(server, tmp_path):
    rejecting = server(lambda n, body: (400, {"error": "bad"}) if "bad" in body["messages"][-1]["content"] else (200, _completion("fine phrase")))
    refiner = OpenAIRefiner("m", rejecting.url, POOL, RefinementCache(tmp_path / "a.sqlite"), concurrency=4, sleep=lambda s: None)
    assert [p.source for p in refiner.refine(["bad input", "good input"])] == [COMPOSED_SOURCE, "radgraph:refined:openai:m@v1"]
    assert refiner.stats["fallback"] == 1

    unauthorised = server(lambda n, body: (401, {"error": "no key"}))
    refiner = OpenAIRefiner("m", unauthorised.url, POOL, RefinementCache(tmp_path / "b.sqlite"), sleep=lambda s: None)
    with pytest.raises(RefinerError, match="HTTP 401 for model 'm'"):
        refiner.refine(["x"])

    down = server(lambda n, body: (500, {"error": "down"}))
    refiner = OpenAIRefiner(
        "m", down.url, POOL, RefinementCache(tmp_path / "c.sqlite"), max_retries=1, concurrency=1,
        max_consecutive_failures=3, sleep=lambda s: None,
    )
    with pytest.raises(RefinerError, match=r"failed for 3 descriptions in a row .*c\.sqlite, so rerunning resumes"):
        refiner.refine([f"x{i}" for i in range(10)])
    assert len(down.requests) <= 2 * (3 + 2)  # stopped early, not after all ten


def test_build_refiner(tmp_path):
    assert isinstance(build_refiner("none", tmp_path / "c.sqlite"), NoRefiner)
    with pytest.raises(ValueError, match="needs --refiner-model"):
        build_refiner("hf", tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match="needs --refiner-url"):
        build_refiner("openai", tmp_path / "c.sqlite", model="m")


@pytest.mark.parametrize("url, allowed", [
    ("https://api.openai.com/v1", True), ("http://localhost:8000/v1", True), ("http://127.0.0.1:8000/v1", True),
    ("http://[::1]:8000/v1", True), ("http://host:8000/v1", False), ("http://10.0.0.5/v1", False),
    ("http://localhost.evil.example/v1", False), ("ftp://localhost/v1", False),
])
def test_key_may_go_only_to_https_or_this_machine(url, allowed):
    assert refiners.key_may_go_to(url) is allowed


def test_the_api_key_is_not_sent_to_a_plain_http_host(tmp_path, monkeypatch):
    sent = []
    monkeypatch.setattr(refiners.urllib.request, "urlopen", lambda request, **kw: sent.append(request))
    monkeypatch.setenv("S2D_TEST_KEY", "secret")
    with pytest.raises(ValueError, match=r"\$S2D_TEST_KEY would be sent unencrypted .*--allow-insecure-refiner-url"):
        build_refiner("openai", tmp_path / "c.sqlite", model="m", url="http://attacker.example:8000/v1",
                      api_key_env="S2D_TEST_KEY")
    assert sent == []
    allowed = build_refiner("openai", tmp_path / "c.sqlite", model="m", url="http://attacker.example:8000/v1",
                            api_key_env="S2D_TEST_KEY", allow_insecure_url=True)
    assert allowed.api_key == "secret"
    assert build_refiner("openai", tmp_path / "c.sqlite", model="m", url="https://api.example/v1",
                         api_key_env="S2D_TEST_KEY").api_key == "secret"
    monkeypatch.delenv("S2D_TEST_KEY")  # no key: nothing to leak, any URL is fine
    assert build_refiner("openai", tmp_path / "c.sqlite", model="m", url="http://host:8000/v1",
                         api_key_env="S2D_TEST_KEY").api_key is None
