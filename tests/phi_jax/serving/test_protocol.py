"""Tests of phi_jax.serving.protocol and chat_template: request parsing, defaults, bodies."""

import pytest

from phi_jax.sampling import Completion
from phi_jax.serving import chat_template, protocol
from phi_jax.serving.protocol import APIError
from phi_jax.tokenizer import byte_level

INFO = protocol.ModelInfo(name="m", tokenizer=byte_level(), max_seq_len=256, vocab_size=257)


def test_completion_defaults_follow_openai():
  request = protocol.parse_completion({"model": "m", "prompt": "ab"}, INFO)
  assert request.prompts == [[97, 98]]
  assert request.max_tokens == [16]
  assert (request.params.temperature, request.params.top_p, request.params.top_k) == (1.0, 1.0, 0)
  assert (request.n, request.stop, request.stream, request.seed) == (1, (), False, None)
  assert not request.chat and request.id.startswith("cmpl-")


def test_completion_fields():
  request = protocol.parse_completion(
      {"prompt": ["a", ""], "max_tokens": 5, "temperature": 0, "top_p": 0.5, "top_k": -1,
       "n": 3, "stop": "\n", "stream": True, "stream_options": {"include_usage": True},
       "seed": 4, "user": "u", "logprobs": None, "echo": False, "best_of": 1,
       "presence_penalty": 0}, INFO)
  assert request.prompts == [[97], [256]]  # an empty prompt is <|endoftext|>
  assert request.max_tokens == [5, 5] and request.num_choices == 6
  assert [request.prompt_of(i) for i in range(6)] == [0, 0, 0, 1, 1, 1]
  assert request.params.temperature == 0 and request.params.top_k == 0
  assert (request.stop, request.include_usage, request.seed) == (("\n",), True, 4)


def test_chat_renders_the_template_and_stops_at_its_markers():
  messages = [{"role": "system", "content": "S"},
              {"role": "user", "content": [{"type": "text", "text": "U"}]},
              {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
  request = protocol.parse_chat({"messages": messages, "stop": ["x"]}, INFO)
  text = INFO.tokenizer.decode(request.prompts[0])
  assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                  "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nV<|im_end|>\n"
                  "<|im_start|>assistant\n")
  assert request.stop == ("<|im_end|>", "<|im_start|>", "x")
  # No max_tokens: the rest of the context, as OpenAI's chat API.
  assert request.max_tokens == [INFO.max_seq_len - len(request.prompts[0])]
  assert request.chat and request.id.startswith("chatcmpl-")
  short = protocol.parse_chat({"messages": messages[-1:], "max_completion_tokens": 3}, INFO)
  assert short.max_tokens == [3]


def test_render_rejects_unknown_roles():
  with pytest.raises(ValueError, match="role"):
    chat_template.render([("tool", "x")])


@pytest.mark.parametrize("body,param", [
    ({"prompt": "a", "max_tokens": True}, "max_tokens"),  # a bool is not an integer
    ({"prompt": "a", "temperature": float("nan")}, "temperature"),
    ({"prompt": "a", "stream_options": {"other": 1}}, "stream_options"),
    ({"prompt": "a", "stop": ["1"] * 17}, "stop"),
    ({"prompt": "a", "suffix": "z"}, "suffix"),
    ({"prompt": [[1]] * 2000, "n": 3}, "n"),
])
def test_invalid_completion_fields(body, param):
  with pytest.raises(APIError) as info:
    protocol.parse_completion(body, INFO)
  assert (info.value.status, info.value.param) == (400, param)


def test_bodies_parse_as_openai_objects():
  from openai.types import Completion as OpenAICompletion  # pylint: disable=g-import-not-at-top
  from openai.types.chat import ChatCompletion, ChatCompletionChunk  # pylint: disable=g-import-not-at-top

  done = [Completion(text="hi", tokens=[104, 105, 256], finish_reason="stop", prompt_tokens=1)]
  request = protocol.parse_completion({"prompt": "a"}, INFO)
  parsed = OpenAICompletion.model_validate(protocol.completion_body(request, done))
  assert parsed.choices[0].text == "hi" and parsed.usage.total_tokens == 4
  chat = protocol.parse_chat({"messages": [{"role": "user", "content": "q"}]}, INFO)
  parsed = ChatCompletion.model_validate(protocol.completion_body(chat, done))
  assert parsed.choices[0].message.content == "hi"
  chunk = ChatCompletionChunk.model_validate(protocol.chunk(chat, 0, "h", role=True))
  assert (chunk.choices[0].delta.role, chunk.choices[0].delta.content) == ("assistant", "h")


def test_completion_suffix_builds_fill_in_the_middle_prompts():
  from phi_jax import fim  # pylint: disable=g-import-not-at-top
  tokenizer = byte_level()
  tokenizer.backend.add_special_tokens(list(fim.FIM_TOKENS))  # ids 257, 258, 259
  info = protocol.ModelInfo(name="m", tokenizer=tokenizer, max_seq_len=256, vocab_size=260)
  request = protocol.parse_completion({"prompt": ["ab", ""], "suffix": "c", "n": 2}, info)
  assert request.prompts == [[257, 97, 98, 259, 99, 258], [257, 259, 99, 258]]
  assert request.num_choices == 4
  # an empty suffix is a plain completion, as with OpenAI
  assert protocol.parse_completion({"prompt": "ab", "suffix": ""}, info).prompts == [[97, 98]]
  with pytest.raises(APIError, match="with a suffix, prompt must be a string") as e:
    protocol.parse_completion({"prompt": [1, 2], "suffix": "c"}, info)
  assert e.value.param == "prompt"
  # the prompt and suffix count against the context
  with pytest.raises(APIError, match="maximum context length") as e:
    protocol.parse_completion({"prompt": "a" * 200, "suffix": "b" * 60}, info)
  # a model whose tokenizer has no sentinels cannot infill: 400 naming why
  with pytest.raises(APIError, match="no fill-in-the-middle tokens") as e:
    protocol.parse_completion({"prompt": "a", "suffix": "z"}, INFO)
  assert (e.value.status, e.value.param) == (400, "suffix")
