"""LLM refiners for stage-3 key phrases: a few-shot prompt, a disk cache, a local or a remote model.

Paper, appendix A: the composed RadGraph descriptions ("effusion in right
pleural") are rewritten into fluent clinical phrases ("right pleural
effusion") by an LLM prompted with a few gold examples drawn at random from a
pool that radiologists wrote. The prompt itself (their Figure 3) did not
survive text extraction; ours (:data:`INSTRUCTION`, versioned by
:data:`PROMPT_VERSION`) asks for the same thing and forbids adding findings.

* The pool is a file the user supplies (JSON ``{"examples": [{"input",
  "output"}]}`` or JSONL). We ship ``resources/few_shot_example.json`` only as
  an illustration of the format: written by us, not radiologist gold.
* Examples are drawn per description with a seed derived from the
  description, so a prompt is reproducible and therefore cacheable.
* Every refinement is cached in SQLite, keyed by the description, the model,
  the back end, the prompt (version and instruction text), the pool's digest,
  the number of examples and the token limit; results are committed as they
  arrive, so a crashed run resumes without paying twice.
* An answer that is empty or absurdly long is not trusted: the composed text
  is kept instead, with source ``radgraph:composed``, and counted.

Two back ends satisfy :class:`s2d_align.data.key_phrases.Refiner`:
:class:`HFRefiner` (a local ``transformers`` causal LM, batched) and
:class:`OpenAIRefiner` (any OpenAI-compatible ``/chat/completions`` endpoint,
such as a vLLM server, with timeouts, retries with back-off and bounded
concurrency, over the standard library's HTTP client).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

from s2d_align.data.key_phrases import COMPOSED_SOURCE, KeyPhrase, NoRefiner

PROMPT_VERSION = "v1"
EXAMPLE_POOL = Path(__file__).parent / "resources" / "few_shot_example.json"

INSTRUCTION = (
    "You rewrite short structured descriptions of chest X-ray findings, extracted from a radiology report, "
    "into one fluent clinical phrase each, as a radiologist would write it. Keep every finding, modifier and "
    "location given; add nothing that is not given; do not explain. Answer with the phrase only."
)


class RefinerError(ValueError):
    """A refiner that cannot work at all (wrong endpoint, key or model); finished refinements stay cached."""


# --------------------------------------------------------------------------- few-shot pool


@dataclass(frozen=True)
class Example:
    input: str
    output: str


class FewShotPool:
    """Gold (composed description -> refined phrase) pairs to draw demonstrations from."""

    def __init__(self, examples: Sequence[Example], origin: str, note: str = ""):
        if not examples:
            raise ValueError(f"{origin}: the few-shot pool has no examples")
        self.examples = tuple(examples)
        self.origin = origin
        self.note = note
        payload = json.dumps([[e.input, e.output] for e in self.examples], ensure_ascii=False)
        self.digest = hashlib.sha256(payload.encode()).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: str | Path) -> "FewShotPool":
        """Read a pool: JSON (``{"examples": [...]}`` or a list) or JSONL, items ``{"input", "output"}``."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such few-shot pool file")
        text = path.read_text(encoding="utf-8")
        note = ""
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError:
            data = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        data.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if isinstance(data, dict):
            note = str(data.get("note", ""))
            data = data.get("examples")
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of {{'input', 'output'}} examples")
        examples = []
        for index, item in enumerate(data):
            if not (isinstance(item, dict) and isinstance(item.get("input"), str) and isinstance(item.get("output"), str)):
                raise ValueError(f"{path}: example {index} must be an object with string 'input' and 'output'")
            examples.append(Example(item["input"].strip(), item["output"].strip()))
        return cls(examples, str(path), note)

    @classmethod
    def shipped_example(cls) -> "FewShotPool":
        return cls.from_file(EXAMPLE_POOL)

    def draw(self, text: str, k: int) -> list[Example]:
        """``k`` distinct examples, drawn with a seed derived from ``text`` (reproducible, cacheable)."""
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        candidates = [e for e in self.examples if e.input != text]
        return random.Random(seed).sample(candidates, min(k, len(candidates)))


def chat_messages(text: str, examples: Sequence[Example]) -> list[dict[str, str]]:
    """The prompt as chat turns: instruction, then each example as a user/assistant pair, then ``text``."""
    messages = [{"role": "system", "content": INSTRUCTION}]
    for example in examples:
        messages.append({"role": "user", "content": example.input})
        messages.append({"role": "assistant", "content": example.output})
    messages.append({"role": "user", "content": text})
    return messages


def completion_prompt(text: str, examples: Sequence[Example]) -> str:
    """The same prompt as plain text, for base models without a chat template."""
    shots = "".join(f"Input: {e.input}\nOutput: {e.output}\n\n" for e in examples)
    return f"{INSTRUCTION}\n\n{shots}Input: {text}\nOutput:"


def clean_answer(answer: str | None, text: str) -> str | None:
    """The phrase in a model's answer, or None when it cannot be trusted (empty, or far longer than the input)."""
    if not answer:
        return None
    for line in answer.strip().splitlines():
        line = line.strip()
        for prefix in ("Output:", "Phrase:", "- ", "* "):
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
        line = line.strip("\"'` ")
        if line:
            phrase = " ".join(line.split())
            return phrase if len(phrase) <= max(3 * len(text), len(text) + 60) else None
    return None


# --------------------------------------------------------------------------- cache


class RefinementCache:
    """SQLite table of finished refinements; each result is committed as it arrives."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS refinements ("
            "key TEXT PRIMARY KEY, input TEXT NOT NULL, output TEXT NOT NULL, model TEXT NOT NULL, "
            "prompt_version TEXT NOT NULL, pool TEXT NOT NULL)"
        )
        self._db.commit()

    @staticmethod
    def key(
        text: str, model: str, prompt_version: str, pool_digest: str, k: int, backend: str, instruction: str,
        max_tokens: int,
    ) -> str:
        """Everything that shapes the answer: another value is another refinement."""
        parts = [text, model, prompt_version, pool_digest, k, backend, instruction, max_tokens]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT key, output FROM refinements WHERE key IN ({marks})", chunk))
        return found

    def put_many(self, rows: Sequence[tuple[str, str, str, str, str, str]]) -> None:
        """Rows of ``(key, input, output, model, prompt_version, pool_digest)``."""
        self._db.executemany("INSERT OR REPLACE INTO refinements VALUES (?, ?, ?, ?, ?, ?)", rows)
        self._db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM refinements").fetchone()[0])

    def close(self) -> None:
        self._db.close()


# --------------------------------------------------------------------------- refiners


class CachedRefiner:
    """Cache lookups, fall-backs and accounting shared by the LLM back ends; they implement ``_generate``."""

    kind = "base"

    def __init__(self, model: str, pool: FewShotPool, cache: RefinementCache, k: int = 4, max_tokens: int = 64):
        self.model = model
        self.pool = pool
        self.cache = cache
        self.k = k
        self.max_tokens = max_tokens  # the most tokens an answer may have
        label = Path(model).name if os.sep in model and Path(model).exists() else model
        self.name = f"{self.kind}:{label}"
        self.source = f"radgraph:refined:{self.kind}:{label}@{PROMPT_VERSION}"
        self.stats = {"cached": 0, "generated": 0, "fallback": 0}

    def _generate(self, texts: Sequence[str]) -> Iterator[list[tuple[int, str | None]]]:
        """Yield ``(index into texts, raw answer or None)`` in chunks, as results arrive."""
        raise NotImplementedError

    def refine(self, composed: Sequence[str]) -> list[KeyPhrase]:
        keys = [
            RefinementCache.key(
                t, self.model, PROMPT_VERSION, self.pool.digest, self.k, self.kind, INSTRUCTION, self.max_tokens
            )
            for t in composed
        ]
        cached = self.cache.get_many(list(dict.fromkeys(keys)))
        outputs: dict[int, str | None] = {}
        from_cache: set[int] = set()
        todo: dict[str, list[int]] = {}
        for index, (text, key) in enumerate(zip(composed, keys)):
            if key in cached:
                outputs[index] = cached[key]
                from_cache.add(index)
            else:
                todo.setdefault(text, []).append(index)
        texts = list(todo)
        for chunk in self._generate(texts):
            rows = []
            for position, answer in chunk:
                text = texts[position]
                phrase = clean_answer(answer, text)
                for index in todo[text]:
                    outputs[index] = phrase
                if phrase is not None:
                    rows.append((keys[todo[text][0]], text, phrase, self.model, PROMPT_VERSION, self.pool.digest))
            self.cache.put_many(rows)
        phrases = []
        for index, text in enumerate(composed):
            phrase = outputs.get(index)
            if phrase is None:
                self.stats["fallback"] += 1
                phrases.append(KeyPhrase(text, COMPOSED_SOURCE))
            else:
                self.stats["cached" if index in from_cache else "generated"] += 1
                phrases.append(KeyPhrase(phrase, self.source))
        return phrases


class HFRefiner(CachedRefiner):
    """A local ``transformers`` causal LM, greedy decoding, batched with left padding."""

    kind = "hf"

    def __init__(
        self,
        model: str,
        pool: FewShotPool,
        cache: RefinementCache,
        k: int = 4,
        batch_size: int = 8,
        max_new_tokens: int = 48,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ):
        super().__init__(model, pool, cache, k, max_new_tokens)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.trust_remote_code = trust_remote_code
        self._loaded = None
        self.calls = 0

    def _load(self):
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=self.trust_remote_code)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForCausalLM.from_pretrained(self.model, trust_remote_code=self.trust_remote_code)
            self._loaded = (tokenizer, model.to(self.device).eval())
        return self._loaded

    def _prompt(self, tokenizer, text: str) -> str:
        examples = self.pool.draw(text, self.k)
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(chat_messages(text, examples), add_generation_prompt=True, tokenize=False)
        return completion_prompt(text, examples)

    def _generate(self, texts: Sequence[str]) -> Iterator[list[tuple[int, str | None]]]:
        if not texts:
            return
        import torch

        tokenizer, model = self._load()
        prompts = [self._prompt(tokenizer, t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        for start in tqdm(range(0, len(order), self.batch_size), desc="refining key phrases", unit="batch"):
            batch = order[start : start + self.batch_size]
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True).to(self.device)
            with torch.inference_mode():
                generated = model.generate(
                    **encoded,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            self.calls += 1
            answers = tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            yield list(zip(batch, answers))


class OpenAIRefiner(CachedRefiner):
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp server ...)."""

    kind = "openai"
    _RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)
    _FATAL_STATUS = (401, 403, 404)

    def __init__(
        self,
        model: str,
        base_url: str,
        pool: FewShotPool,
        cache: RefinementCache,
        k: int = 4,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 8,
        max_tokens: int = 64,
        max_consecutive_failures: int = 20,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(model, pool, cache, k, max_tokens)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = max(1, concurrency)
        self.max_consecutive_failures = max_consecutive_failures
        self.sleep = sleep
        self.requests = 0

    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.requests += 1
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def _ask(self, text: str) -> str | None:
        """One description, with retries; None when the endpoint keeps failing for it."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": chat_messages(text, self.pool.draw(text, self.k)),
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        for attempt in range(self.max_retries + 1):
            wait_for = min(self.max_backoff, self.backoff * 2**attempt)
            try:
                reply = self._post(body)
                return str(reply["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as err:
                if err.code in self._FATAL_STATUS:
                    raise RefinerError(
                        f"{self.url} answered HTTP {err.code} for model {self.model!r}: check the URL, the model "
                        "name and the API key variable"
                    ) from err
                if err.code not in self._RETRY_STATUS:
                    return None
                retry_after = err.headers.get("Retry-After") if err.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait_for = min(self.max_backoff, float(retry_after))
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
                pass
            except (ValueError, KeyError, IndexError, TypeError):  # a reply that is not a chat completion
                pass
            if attempt < self.max_retries:
                self.sleep(wait_for)
        return None

    def _generate(self, texts: Sequence[str]) -> Iterator[list[tuple[int, str | None]]]:
        if not texts:
            return
        failures_in_a_row = 0
        progress = tqdm(total=len(texts), desc="refining key phrases", unit="phrase")
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pending = set()
            queue = iter(enumerate(texts))
            futures: dict[Any, int] = {}

            def submit_next() -> None:
                for index, text in queue:
                    future = pool.submit(self._ask, text)
                    futures[future] = index
                    pending.add(future)
                    return

            for _ in range(self.concurrency * 2):
                submit_next()
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    chunk = []
                    for future in done:
                        pending.discard(future)
                        answer = future.result()
                        chunk.append((futures.pop(future), answer))
                        failures_in_a_row = failures_in_a_row + 1 if answer is None else 0
                        submit_next()
                    progress.update(len(chunk))
                    yield chunk
                    if failures_in_a_row >= self.max_consecutive_failures:
                        raise RefinerError(
                            f"{self.url} failed for {failures_in_a_row} descriptions in a row (after "
                            f"{self.max_retries} retries each); finished refinements are cached in "
                            f"{self.cache.path}, so rerunning resumes where this stopped"
                        )
            finally:
                for future in pending:
                    future.cancel()
                progress.close()


# --------------------------------------------------------------------------- factory

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def key_may_go_to(url: str) -> bool:
    """An API key may travel to ``url``: https anywhere, plain http only to this machine."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and (host in LOCAL_HOSTS or host.endswith(".localhost") or host.startswith("127."))


def build_refiner(
    kind: str,
    cache_path: Path,
    model: str | None = None,
    url: str | None = None,
    pool_path: str | Path | None = None,
    k: int = 4,
    batch_size: int = 8,
    concurrency: int = 8,
    timeout: float = 60.0,
    max_retries: int = 5,
    api_key_env: str = "OPENAI_API_KEY",
    device: str = "cpu",
    allow_insecure_url: bool = False,
):
    """The refiner the command line asks for (``none``, ``hf`` or ``openai``).

    The API key is sent only to an https URL or to this machine (localhost,
    127.0.0.1, ::1); any other plain-http URL would carry it in clear text
    across the network, so it needs ``allow_insecure_url``.
    """
    if kind == "none":
        return NoRefiner()
    if not model:
        raise ValueError(f"--refiner {kind} needs --refiner-model (a local folder or hub id, or the served model name)")
    pool = FewShotPool.from_file(pool_path) if pool_path else FewShotPool.shipped_example()
    cache = RefinementCache(cache_path)
    if kind == "hf":
        return HFRefiner(model, pool, cache, k=k, batch_size=batch_size, device=device)
    if kind == "openai":
        if not url:
            raise ValueError("--refiner openai needs --refiner-url, e.g. http://localhost:8000/v1")
        api_key = os.environ.get(api_key_env)
        if api_key and not allow_insecure_url and not key_may_go_to(url):
            raise ValueError(
                f"--refiner-url {url}: ${api_key_env} would be sent unencrypted to another machine; use https, "
                "a localhost URL, or --allow-insecure-refiner-url if the network between is trusted"
            )
        return OpenAIRefiner(
            model, url, pool, cache, k=k, api_key=api_key, timeout=timeout,
            max_retries=max_retries, concurrency=concurrency,
        )
    raise ValueError(f"unknown refiner {kind!r}; expected none, hf or openai")
