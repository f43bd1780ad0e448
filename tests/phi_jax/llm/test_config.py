"""phi_jax.llm.config.LLMConfig: validation names the field."""

import pytest

from phi_jax.llm import LLMClient, LLMConfig
from tests.fake_openai import TEST_SECRET as SECRET


def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match="'model'"):
    LLMClient(LLMConfig())
  with pytest.raises(ValueError, match="'base_url'.*http"):
    LLMConfig(model="m", base_url="localhost:8000")
  with pytest.raises(ValueError, match="'max_concurrency'"):
    LLMConfig(model="m", max_concurrency=0)
  with pytest.raises(ValueError, match="'api_key_env'.*never put keys in configs"):
    LLMConfig(model="m", api_key_env=SECRET)
  with pytest.raises(ValueError, match=r"config.grade.llm: unknown field\(s\) \['modle'\]"):
    LLMConfig.from_mapping({"modle": "m"}, where="config.grade.llm")
  with pytest.raises(ValueError, match="config.grade.llm: field 'temperature'"):
    LLMConfig.from_mapping({"model": "m", "temperature": 3.0}, where="config.grade.llm")
  config = LLMConfig.from_mapping({"model": "m", "base_url": "", "cache_dir": "",
                                   "stop": ["\n"]})
  assert config.base_url is None and config.cache_dir is None and config.stop == ("\n",)
  assert SECRET not in repr(config)
