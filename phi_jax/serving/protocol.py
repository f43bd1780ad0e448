"""The OpenAI completions and chat completions API: request validation, response bodies.

`parse_completion` and `parse_chat` turn a request body (parsed JSON) into a
`GenerationRequest` -- token prompts, sampling parameters, stop strings -- or raise
`APIError` with the status and OpenAI-style message the client gets. The `*_body` and
`*_chunk` functions build the JSON the official `openai` client parses.

Supported request fields (others are rejected with 400, so typos do not pass silently):

  both: model, max_tokens (completions default 16; chat default: the rest of the
        context), temperature (default 1), top_p, top_k (extension; 0 or -1 = off),
        n, stop (string or list), stream, stream_options.include_usage, seed, user;
        presence/frequency_penalty, logit_bias only at their no-op values.
  completions: prompt (string, list of strings, token ids, list of token-id lists),
        logprobs (0-20: each token's logprob and that many top alternatives),
        echo (the prompt ahead of the completion, with its logprobs under logprobs;
        max_tokens may then be 0), best_of (1 only), suffix (fill-in-the-middle: the
        text after the gap, the prompts being the text before it; the completion is
        the middle. Needs a model trained with FIM, else 400; empty = no suffix).
  chat: messages (system/user/assistant; string content or text parts),
        logprobs (bool), top_logprobs (0-20, with logprobs), max_completion_tokens,
        response_format ({"type": "text"} only).

Log-probabilities are the model's own (`sampling.TokenLogprobs`: log-softmax of its
logits, before temperature, top-k and top-p); they are not streamed (a streamed
request asking for them is a 400). The logprobs layouts are OpenAI's: completions
`{tokens, token_logprobs, top_logprobs, text_offset}` (a prompt's first token has
logprob null; top_logprobs maps token text to logprob, the chosen token included;
text_offset is each token's start in the choice's text), chat `{content: [{token,
logprob, bytes, top_logprobs}]}`. A token that is part of a UTF-8 character is shown
as "bytes:\\xNN...".
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from phi_jax import fim
from phi_jax.sampling import MAX_TOP_LOGPROBS, Completion, SamplingParams, TokenLogprobs
from phi_jax.serving import chat_template
from phi_jax.tokenizer import Tokenizer

MAX_N = 128  # choices per prompt
MAX_ROWS = 4096  # prompts x n per request
MAX_STOP = 16  # stop strings per request

_COMMON_FIELDS = frozenset({
    "model", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "stream",
    "stream_options", "seed", "user", "logprobs", "presence_penalty", "frequency_penalty",
    "logit_bias"})
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt", "echo", "best_of", "suffix"}
CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs",
                                "response_format", "tools", "tool_choice", "functions",
                                "function_call", "metadata", "store"}


class APIError(Exception):
  """A request error, answered as {"error": {"message", "type", "param", "code"}}."""

  def __init__(self, status: int, message: str, *, param: str | None = None,
               code: str | None = None, type: str = "invalid_request_error"):  # pylint: disable=redefined-builtin
    super().__init__(message)
    self.status = status
    self.message = message
    self.param = param
    self.code = code
    self.type = type

  def body(self) -> dict:
    return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error",  # pylint: disable=redefined-builtin
               param: str | None = None, code: str | None = None) -> dict:
  return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What request validation needs to know about the served model."""
  name: str
  tokenizer: Tokenizer
  max_seq_len: int
  vocab_size: int


@dataclasses.dataclass
class GenerationRequest:
  """A validated completions or chat request: what to generate, per prompt and choice."""
  chat: bool
  model: str
  prompts: list[list[int]]  # token prompts
  max_tokens: list[int]  # per prompt
  n: int  # choices per prompt
  params: SamplingParams
  stop: tuple[str, ...]
  stream: bool
  include_usage: bool
  seed: int | None
  # None: no logprobs; k >= 0: each token's logprob and its k top alternatives
  logprobs: int | None = None
  echo: bool = False  # completions: the prompt ahead of the completion
  id: str = dataclasses.field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
  created: int = dataclasses.field(default_factory=lambda: int(time.time()))

  @property
  def num_choices(self) -> int:
    return len(self.prompts) * self.n

  def prompt_of(self, choice: int) -> int:
    """The prompt index of choice `choice` (choices are grouped by prompt)."""
    return choice // self.n


# ----------------------------------------------------------------------------- parsing


def parse_completion(body: Any, info: ModelInfo) -> GenerationRequest:
  """Validates a POST /v1/completions body."""
  body = _object(body)
  _check_fields(body, COMPLETION_FIELDS)
  _check_model(body, info)
  if "prompt" not in body or body["prompt"] is None:
    raise APIError(400, "you must provide a prompt", param="prompt")
  echo = _get(body, "echo", bool, False)
  if _get(body, "best_of", int, 1) != 1:
    raise APIError(400, "best_of is not supported (only 1)", param="best_of")
  suffix = _get(body, "suffix", str, "")
  if echo and suffix:
    raise APIError(400, "echo is not supported with a suffix", param="echo")
  logprobs = _top_count(body, "logprobs")
  stream = _get(body, "stream", bool, False)
  for field, value in (("logprobs", logprobs is not None), ("echo", echo)):
    if value and stream:
      raise APIError(400, f"{field} is not supported with stream: true; send the request "
                     "without stream", param=field)
  prompts = (_infill_prompts(body["prompt"], suffix, info) if suffix
             else _prompts(body["prompt"], info))
  return _request(body, info, prompts, chat=False, stop=(),
                  default_max_tokens=16, max_tokens_field="max_tokens",
                  logprobs=logprobs, echo=echo)


def parse_chat(body: Any, info: ModelInfo) -> GenerationRequest:
  """Validates a POST /v1/chat/completions body."""
  body = _object(body)
  _check_fields(body, CHAT_FIELDS)
  _check_model(body, info)
  if "messages" not in body or body["messages"] is None:
    raise APIError(400, "you must provide messages", param="messages")
  wants_logprobs = _get(body, "logprobs", bool, False)
  top_logprobs = _top_count(body, "top_logprobs")
  if top_logprobs is not None and not wants_logprobs:
    raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
  if wants_logprobs and _get(body, "stream", bool, False):
    raise APIError(400, "logprobs is not supported with stream: true; send the request "
                   "without stream", param="logprobs")
  for field in ("tools", "tool_choice", "functions", "function_call"):
    if body.get(field) is not None:
      raise APIError(400, f"{field} is not supported", param=field)
  response_format = body.get("response_format")
  if response_format is not None and response_format != {"type": "text"}:
    raise APIError(400, "response_format is not supported (only {\"type\": \"text\"})",
                   param="response_format")
  prompt = chat_template.render(_messages(body["messages"]))
  prompts = [info.tokenizer.encode(prompt)]
  field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else (
      "max_tokens")
  return _request(body, info, prompts, chat=True, stop=chat_template.STOP,
                  default_max_tokens=None, max_tokens_field=field,
                  logprobs=(top_logprobs or 0) if wants_logprobs else None)


def _top_count(body: Mapping, field: str) -> int | None:
  """A count of top alternatives per token (0..MAX_TOP_LOGPROBS), or None when absent."""
  count = _get(body, field, int, None)
  if count is not None and not 0 <= count <= MAX_TOP_LOGPROBS:
    raise APIError(400, f"{field} must be between 0 and {MAX_TOP_LOGPROBS}, got {count}",
                   param=field)
  return count


def _request(body: Mapping, info: ModelInfo, prompts: list[list[int]], *, chat: bool,
             stop: tuple[str, ...], default_max_tokens: int | None,
             max_tokens_field: str, logprobs: int | None = None,
             echo: bool = False) -> GenerationRequest:
  """The fields common to completions and chat, validated."""
  n = _get(body, "n", int, 1)
  if not 1 <= n <= MAX_N:
    raise APIError(400, f"n must be between 1 and {MAX_N}, got {n}", param="n")
  if len(prompts) * n > MAX_ROWS:
    raise APIError(400, f"{len(prompts)} prompts x n={n} is more than {MAX_ROWS} "
                   "completions per request", param="n")
  temperature = _get(body, "temperature", float, 1.0)
  if temperature < 0:
    raise APIError(400, f"temperature must be >= 0, got {temperature}", param="temperature")
  top_p = _get(body, "top_p", float, 1.0)
  if not 0 < top_p <= 1:
    raise APIError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
  top_k = _get(body, "top_k", int, 0)
  if top_k < -1:
    raise APIError(400, f"top_k must be >= 0 (0 or -1: no top-k filter), got {top_k}",
                   param="top_k")
  for field in ("presence_penalty", "frequency_penalty"):
    if _get(body, field, float, 0.0) != 0:
      raise APIError(400, f"{field} is not supported (only 0)", param=field)
  if body.get("logit_bias"):
    raise APIError(400, "logit_bias is not supported", param="logit_bias")
  _get(body, "user", str, "")
  seed = _get(body, "seed", int, None)
  stream = _get(body, "stream", bool, False)
  options = _get(body, "stream_options", dict, {})
  unknown = set(options) - {"include_usage"}
  if unknown:
    raise APIError(400, f"unsupported stream_options {sorted(unknown)}",
                   param="stream_options")
  include_usage = bool(_get(options, "include_usage", bool, False, where="stream_options."))
  max_tokens = _max_tokens(body, info, prompts, max_tokens_field, default_max_tokens,
                           prompt_field="messages" if chat else "prompt", allow_zero=echo)
  return GenerationRequest(
      chat=chat, model=info.name, prompts=prompts, max_tokens=max_tokens, n=n,
      params=SamplingParams(temperature=temperature, top_p=top_p, top_k=max(top_k, 0)),
      stop=tuple(stop) + _stop(body.get("stop")), stream=stream,
      include_usage=stream and include_usage, seed=seed, logprobs=logprobs, echo=echo,
      id=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}")


def _max_tokens(body: Mapping, info: ModelInfo, prompts: list[list[int]], field: str,
                default: int | None, *, prompt_field: str,
                allow_zero: bool = False) -> list[int]:
  """max_tokens per prompt (default None: the rest of the context), checked against it.

  allow_zero (echo): max_tokens 0 returns the prompt alone, which may fill the context.
  """
  context = info.max_seq_len
  longest = max(len(p) for p in prompts)
  if allow_zero and _get(body, field, int, None) == 0:
    if longest > context:
      raise APIError(400, f"This model's maximum context length is {context} tokens, and "
                     f"the prompt has {longest} tokens. Please shorten the prompt.",
                     param=prompt_field, code="context_length_exceeded")
    return [0] * len(prompts)
  if longest >= context:
    raise APIError(400, f"This model's maximum context length is {context} tokens, and the "
                   f"prompt has {longest} tokens, leaving no room for a completion. Please "
                   "shorten the prompt.", param=prompt_field, code="context_length_exceeded")
  requested = _get(body, field, int, None)
  if requested is None:
    if default is not None:
      requested = default
    else:  # as OpenAI chat: up to the end of the context
      return [context - len(p) for p in prompts]
  if requested < 1:
    raise APIError(400, f"{field} must be at least 1 (0 only with echo), got {requested}",
                   param=field)
  if longest + requested > context:
    raise APIError(400, f"This model's maximum context length is {context} tokens. However, "
                   f"you requested {longest + requested} tokens ({longest} in the prompt, "
                   f"{requested} for the completion). Please reduce the prompt or {field}.",
                   param=field, code="context_length_exceeded")
  return [requested] * len(prompts)


def _prompts(prompt: Any, info: ModelInfo) -> list[list[int]]:
  """Token prompts of a string, list of strings, token ids or list of token-id lists."""
  kinds = "a string, a list of strings, a list of token ids or a list of token-id lists"
  if isinstance(prompt, str):
    texts, token_lists = [prompt], None
  elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
    texts, token_lists = prompt, None
  elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
    texts, token_lists = None, [prompt]
  elif isinstance(prompt, list) and prompt and all(
      isinstance(p, list) and all(_is_int(t) for t in p) for p in prompt):
    texts, token_lists = None, prompt
  else:
    raise APIError(400, f"prompt must be {kinds}; got {_describe(prompt)}", param="prompt")
  if len(texts or token_lists) > MAX_ROWS:
    raise APIError(400, f"at most {MAX_ROWS} prompts per request", param="prompt")
  if texts is not None:
    token_lists = info.tokenizer.encode_batch(list(texts))
    eos = info.tokenizer.eos_id
    # An empty prompt starts a new document, as with OpenAI: <|endoftext|>.
    token_lists = [t or ([eos] if eos is not None else []) for t in token_lists]
  for i, tokens in enumerate(token_lists):
    if not tokens:
      raise APIError(400, f"prompt {i} is empty", param="prompt")
    if min(tokens) < 0 or max(tokens) >= info.vocab_size:
      raise APIError(400, f"prompt {i} has token ids outside [0, {info.vocab_size})",
                     param="prompt")
  return [list(t) for t in token_lists]


def _infill_prompts(prompt: Any, suffix: str, info: ModelInfo) -> list[list[int]]:
  """Fill-in-the-middle token prompts: each text prompt is the prefix before the gap,
  `suffix` the text after it (`phi_jax.fim`)."""
  texts = [prompt] if isinstance(prompt, str) else prompt
  if not isinstance(texts, list) or not texts or not all(isinstance(p, str) for p in texts):
    raise APIError(400, f"with a suffix, prompt must be a string or a list of strings; got "
                   f"{_describe(prompt)}", param="prompt")
  if len(texts) > MAX_ROWS:
    raise APIError(400, f"at most {MAX_ROWS} prompts per request", param="prompt")
  try:
    return [fim.infill_prompt(info.tokenizer, text, suffix) for text in texts]
  except ValueError as e:
    raise APIError(400, f"suffix is not supported by this model: {e}",
                   param="suffix") from None


def _messages(messages: Any) -> list[tuple[str, str]]:
  if not isinstance(messages, list) or not messages:
    raise APIError(400, "messages must be a non-empty list of {\"role\", \"content\"} "
                   f"objects; got {_describe(messages)}", param="messages")
  out = []
  for i, message in enumerate(messages):
    where = f"messages[{i}]"
    if not isinstance(message, dict):
      raise APIError(400, f"{where} must be an object, got {_describe(message)}", param=where)
    role = message.get("role")
    if role not in chat_template.ROLES:
      raise APIError(400, f"{where}.role must be one of {list(chat_template.ROLES)}, got "
                     f"{role!r}", param=f"{where}.role")
    out.append((role, _content(message.get("content"), f"{where}.content")))
  return out


def _content(content: Any, where: str) -> str:
  """A message's text: a string, or a list of {"type": "text", "text": ...} parts."""
  if isinstance(content, str):
    return content
  if isinstance(content, list) and all(
      isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
      for p in content):
    return "".join(p["text"] for p in content)
  raise APIError(400, f"{where} must be a string or a list of text parts "
                 f"({{\"type\": \"text\", \"text\": ...}}); got {_describe(content)}",
                 param=where)


def _stop(stop: Any) -> tuple[str, ...]:
  if stop is None:
    return ()
  stops = [stop] if isinstance(stop, str) else stop
  if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
    raise APIError(400, f"stop must be a non-empty string or a list of non-empty strings; "
                   f"got {_describe(stop)}", param="stop")
  if len(stops) > MAX_STOP:
    raise APIError(400, f"at most {MAX_STOP} stop strings, got {len(stops)}", param="stop")
  return tuple(stops)


def _object(body: Any) -> dict:
  if not isinstance(body, dict):
    raise APIError(400, f"the request body must be a JSON object, got {_describe(body)}")
  return body


def _check_fields(body: Mapping, known: frozenset[str]) -> None:
  unknown = sorted(set(body) - known)
  if unknown:
    raise APIError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}",
                   param=unknown[0])


def _check_model(body: Mapping, info: ModelInfo) -> None:
  """The model field is optional; when given it must name the served model."""
  model = _get(body, "model", str, None)
  if model is not None and model != info.name:
    raise APIError(404, f"The model '{model}' does not exist; this server serves "
                   f"'{info.name}'", param="model", code="model_not_found")


def _get(body: Mapping, field: str, kind: type, default: Any, where: str = "") -> Any:
  """body[field] checked to be of `kind` (int: not bool; float: any finite number)."""
  value = body.get(field)
  if value is None:
    return default
  if kind is int:
    ok = _is_int(value)
  elif kind is float:
    ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
  else:
    ok = isinstance(value, kind)
  if not ok:
    names = {int: "an integer", float: "a number", bool: "a boolean", str: "a string",
             dict: "an object"}
    raise APIError(400, f"{where}{field} must be {names[kind]}, got {_describe(value)}",
                   param=where + field)
  return float(value) if kind is float else value


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
  text = repr(value)
  return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


# ----------------------------------------------------------------------------- responses


def usage(request: GenerationRequest, completions: Sequence[Completion]) -> dict:
  """Token counts: each prompt once (whatever n), every generated token."""
  prompt_tokens = sum(len(p) for p in request.prompts)
  completion_tokens = sum(len(c.tokens) for c in completions)
  return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
          "total_tokens": prompt_tokens + completion_tokens}


def _envelope(request: GenerationRequest, obj: str) -> dict:
  return {"id": request.id, "object": obj, "created": request.created,
          "model": request.model, "system_fingerprint": None}


def completion_body(request: GenerationRequest, completions: Sequence[Completion],
                    tokenizer: Tokenizer | None = None) -> dict:
  """The response of a non-streamed completions (or chat) request; `tokenizer` writes
  the tokens of echo and logprobs (required with them)."""
  if (request.echo or request.logprobs is not None) and tokenizer is None:
    raise ValueError("echo and logprobs need the tokenizer")
  if request.chat:
    choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                "logprobs": (None if request.logprobs is None else
                             _chat_logprobs(c, request.logprobs, tokenizer)),
                "finish_reason": c.finish_reason}
               for i, c in enumerate(completions)]
    body = _envelope(request, "chat.completion")
  else:
    choices = []
    for i, c in enumerate(completions):
      prompt = request.prompts[request.prompt_of(i)]
      text = tokenizer.decode(prompt) + c.text if request.echo else c.text
      logprobs = None
      if request.logprobs is not None:
        logprobs = _completion_logprobs(prompt if request.echo else [], c, tokenizer)
      choices.append({"index": i, "text": text, "logprobs": logprobs,
                      "finish_reason": c.finish_reason})
    body = _envelope(request, "text_completion")
  return {**body, "choices": choices, "usage": usage(request, completions)}


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
  """A token as the logprobs show it: its text, or "bytes:\\xNN..." when its bytes are
  not whole UTF-8 characters (part of a character split across tokens)."""
  data = tokenizer.token_bytes(token_id)
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def _completion_logprobs(prompt: Sequence[int], completion: Completion,
                         tokenizer: Tokenizer) -> dict:
  """The legacy completions layout over the echoed prompt (if any) and the completion.

  top_logprobs[i] maps the top alternatives' texts to their logprobs, and always holds
  the chosen token (so up to k + 1 entries), as OpenAI's does.
  """
  scores = completion.logprobs
  if prompt:
    if completion.prompt_logprobs is None:
      raise ValueError("echo with logprobs needs the prompt's logprobs")
    scores = completion.prompt_logprobs + scores
  ids = list(prompt) + list(completion.tokens)
  if len(scores) != len(ids):
    raise ValueError(f"{len(ids)} tokens but {len(scores)} logprobs")
  tokens, top_logprobs = [], []
  for token_id, logprob, top in zip(ids, scores.logprobs, scores.top):
    text = token_text(tokenizer, token_id)
    tokens.append(text)
    if logprob is None:
      top_logprobs.append(None)
      continue
    alternatives = {text: logprob}
    for alt_id, alt_logprob in top:
      alternatives.setdefault(token_text(tokenizer, alt_id), alt_logprob)
    top_logprobs.append(alternatives)
  # Offsets in characters of the choice's text: a token's bytes are decoded after
  # those before it, so a character split over tokens starts at the token completing it.
  decoder = codecs.getincrementaldecoder("utf-8")("replace")
  offsets, position = [], 0
  for token_id in ids:
    offsets.append(position)
    position += len(decoder.decode(tokenizer.token_bytes(token_id)))
  return {"tokens": tokens, "token_logprobs": list(scores.logprobs),
          "top_logprobs": top_logprobs, "text_offset": offsets}


def _chat_logprobs(completion: Completion, k: int, tokenizer: Tokenizer) -> dict:
  """The chat layout: one entry per completion token, with its k top alternatives."""
  scores: TokenLogprobs = completion.logprobs

  def entry(token_id: int, logprob: float) -> dict:
    return {"token": token_text(tokenizer, token_id), "logprob": logprob,
            "bytes": list(tokenizer.token_bytes(token_id))}

  content = [{**entry(token_id, logprob),
              "top_logprobs": [entry(alt_id, alt) for alt_id, alt in top[:k]]}
             for token_id, logprob, top in zip(completion.tokens, scores.logprobs, scores.top)]
  return {"content": content, "refusal": None}


def chunk(request: GenerationRequest, index: int, text: str | None,
          finish_reason: str | None = None, *, role: bool = False) -> dict:
  """One streamed chunk of choice `index`: new text and/or its finish_reason.

  Chat chunks carry a `delta` ({"role": "assistant"} first when role=True, then
  {"content": text}); completion chunks carry `text`.
  """
  if request.chat:
    delta = {"role": "assistant", "content": ""} if role else {}
    if text:
      delta["content"] = text
    choice = {"index": index, "delta": delta, "logprobs": None,
              "finish_reason": finish_reason}
    body = _envelope(request, "chat.completion.chunk")
  else:
    choice = {"index": index, "text": text or "", "logprobs": None,
              "finish_reason": finish_reason}
    body = _envelope(request, "text_completion")
  body["choices"] = [choice]
  if request.include_usage:
    body["usage"] = None
  return body


def usage_chunk(request: GenerationRequest, completions: Sequence[Completion]) -> dict:
  """The last streamed chunk when stream_options.include_usage: no choices, the usage."""
  obj = "chat.completion.chunk" if request.chat else "text_completion"
  return {**_envelope(request, obj), "choices": [], "usage": usage(request, completions)}


def model_body(name: str, created: int) -> dict:
  return {"id": name, "object": "model", "created": created, "owned_by": "phi_jax"}
