"""The attribute step's lineage: which training data the evaluated model saw in this run,
and what it says when the model (or what it was trained from) is imported."""

from configs import tiny
from recipe import graph
from recipe import runner
from recipe.stages import attribute


def _lineage(tmp_path, **changes):
  config = tiny.get_config()
  for dotted, value in changes.items():
    section, field = dotted.split(".")
    config[section][field] = value
  nodes = graph.build()
  ctx = runner.Context(config, str(tmp_path / "work"), nodes,
                       selected=[n.name for n in nodes.nodes])
  return attribute.lineage(ctx)


def test_the_finetuned_model_saw_finetuning_and_pretraining_data(tmp_path):
  found = _lineage(tmp_path)
  assert found["stages"] == ["finetune", "pretrain"] and found["unavailable"] == []
  # tiny: finetuning on the exercises (a mixture) and the mined ones, after pretraining
  # on the filtered code and the textbooks (phi1_code_textbook)
  assert found["datasets"] == ["phi1_exercises", "phi1_mined_exercises",
                               "phi1_filtered_code", "phi1_textbooks"]
  assert _lineage(tmp_path, **{"eval.model": "pretrain"})["datasets"] == [
      "phi1_filtered_code", "phi1_textbooks"]


def test_an_imported_model_says_its_training_data_is_not_in_the_run(tmp_path):
  elsewhere = tmp_path / "hf"
  elsewhere.mkdir()
  found = _lineage(tmp_path, **{"eval.model": str(elsewhere)})
  assert found["datasets"] == [] and found["stages"] == []
  assert found["unavailable"] == [f"{elsewhere} is a model from elsewhere: the data it "
                                  "was trained on is not in this run"]
  imported_init = _lineage(tmp_path, **{"init.model": "microsoft/phi-1"})
  assert imported_init["stages"] == ["finetune", "pretrain"]
  assert imported_init["unavailable"] == ["config.init.model = 'microsoft/phi-1' is "
                                          "imported: the data it was trained on is not in "
                                          "this run"]
