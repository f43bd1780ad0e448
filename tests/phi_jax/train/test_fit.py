"""Fitting the step to device memory (phi_jax.train.fit) on simulated CPU devices."""

import itertools
import json

import jax
import pytest

from configs.base import get_config
from phi_jax.config import PhiConfig
from phi_jax.settings import to_config
from phi_jax.train import fit as fit_lib, mesh as mesh_lib
from phi_jax.train.settings import train_settings

CONFIG = PhiConfig(vocab_size=128, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                   rotary_dim=4, max_seq_len=32, dtype="float32")
RULES = mesh_lib.parse_rules(get_config().mesh.rules)
GIB = 2**30


def cfg(microbatches=0, memory_gib=1.0, headroom=0.1, batch_size=16):
  return to_config(train_settings(steps=10, batch_size=batch_size, lr=1e-2, warmup_steps=0,
                                  seq_len=16, microbatches=microbatches,
                                  device_memory_gib=memory_gib, memory_headroom=headroom))


def mesh(fsdp=2):
  return mesh_lib.make_mesh(dict(data=1, fsdp=fsdp, tensor=1), devices=jax.devices()[:fsdp])


def synthetic_peak(calls):
  """Peak bytes falling with the micro-batch count and the remat policy's weight."""
  weight = {"none": 8, "dots": 4, "dots_with_no_batch_dims": 2, "full": 1}

  def peak(remat, k):
    calls.append((remat, k))
    return int(weight[remat] * GIB / k)
  return peak


def brute_force(peak, budget, counts):
  for remat in fit_lib.REMAT_ORDER:
    fitting = [k for k in counts if peak(remat, k) <= budget]
    if fitting:
      return remat, min(fitting)
  return None


@pytest.mark.parametrize("budget_gib", [0.05, 0.3, 0.9, 1.5, 3.0, 9.0])
def test_search_equals_brute_force_with_fewer_measurements(budget_gib):
  counts = fit_lib.microbatch_counts(64, 2)
  assert counts == [1, 2, 4, 8, 16, 32]
  calls = []
  search = fit_lib.Search(synthetic_peak(calls), int(budget_gib * GIB), counts)
  expected = brute_force(synthetic_peak([]), int(budget_gib * GIB), counts)
  if expected is None:
    with pytest.raises(fit_lib.FitError, match="no remat policy"):
      search.choose()
  else:
    assert search.choose() == expected
  assert len(calls) == len(set(calls)) <= 4 * 4  # binary search: never all 24


def test_auto_chooses_and_records_and_a_restart_reads_the_record(tmp_path):
  record = str(tmp_path / "fit.json")
  calls = []
  fit = fit_lib.resolve(CONFIG.replace(remat="auto"), cfg(memory_gib=1.0), mesh(), RULES,
                        record_path=record, peak=synthetic_peak(calls))
  # budget 0.9 GiB: 'none' needs 8/k GiB (k <= 8 per 16 rows over 2 devices): none fits;
  # 'dots' 4/k: k = 8 gives 0.5
  assert (fit.remat, fit.microbatches, fit.chosen) == ("dots", 8, True)
  assert fit.peak == GIB // 2 and fit.budget == int(0.9 * GIB)
  assert "chose remat='dots', microbatches=8" in fit.describe()
  saved = json.load(open(record))
  assert saved[saved["last"]]["remat"] == "dots" and "cpu" in saved["last"]
  again = fit_lib.resolve(CONFIG.replace(remat="auto"), cfg(memory_gib=1.0), mesh(), RULES,
                          record_path=record, peak=lambda *_: pytest.fail("searched again"))
  assert (again.remat, again.microbatches) == ("dots", 8)
  # other devices (a larger budget) choose again
  larger = fit_lib.resolve(CONFIG.replace(remat="auto"), cfg(memory_gib=20.0), mesh(), RULES,
                           record_path=record, peak=synthetic_peak([]))
  assert (larger.remat, larger.microbatches) == ("none", 1)


def test_given_values_are_checked_and_a_misfit_names_what_fits():
  ok = fit_lib.resolve(CONFIG.replace(remat="full"), cfg(microbatches=2), mesh(), RULES,
                       peak=synthetic_peak([]))
  assert (ok.remat, ok.microbatches, ok.chosen) == ("full", 2, False)
  with pytest.raises(fit_lib.FitError, match=r"train.microbatches = 1 with model.remat = "
                     r"'none' needs 8.00 GiB .* what fits: model.remat = 'dots', "
                     r"train.microbatches = 8"):
    fit_lib.resolve(CONFIG, cfg(microbatches=1), mesh(), RULES, peak=synthetic_peak([]))
  # one setting given, the other chosen
  fixed_remat = fit_lib.resolve(CONFIG, cfg(microbatches=0, memory_gib=5.0), mesh(), RULES,
                                peak=synthetic_peak([]))
  assert (fixed_remat.remat, fixed_remat.microbatches) == ("none", 2)


def test_no_memory_limit_on_cpu_compiles_nothing():
  fit = fit_lib.resolve(CONFIG.replace(remat="auto"), cfg(memory_gib=0.0), mesh(), RULES,
                        peak=lambda *_: pytest.fail("compiled"))
  assert (fit.remat, fit.microbatches, fit.peak) == ("none", 1, None)


@pytest.mark.slow
def test_the_choice_from_compiles_equals_brute_force_on_cpu_devices():
  """The compiled steps' peaks on 2 simulated CPU devices, with a budget between them:
  resolve's choice is the first fitting (remat, count) of the brute-force table."""
  m = mesh()
  counts = fit_lib.microbatch_counts(16, 2)
  peaks = {(r, k): fit_lib.peak_bytes(fit_lib.compile_step(CONFIG.replace(remat=r), cfg(k),
                                                           m, RULES, k))
           for r, k in itertools.product(fit_lib.REMAT_ORDER, counts)}
  budget = sorted(set(peaks.values()))[len(set(peaks.values())) // 3]
  fit = fit_lib.resolve(CONFIG.replace(remat="auto"), cfg(memory_gib=budget / GIB / 0.9), m,
                        RULES)
  expected = brute_force(lambda r, k: peaks[r, k], int(budget / 0.9 * 0.9), counts)
  assert (fit.remat, fit.microbatches) == expected
  assert fit.peak == peaks[expected]


def test_a_compilers_out_of_memory_error_reads_as_a_peak_over_the_budget():
  """XLA:TPU refuses a program over HBM while compiling (the v5p-4 phi-1 search met it):
  the search reads the bytes it says are needed, so that count just does not fit."""
  tpu = jax.errors.JaxRuntimeError(
      "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
      "temporaries (134.00G) exceeds available HBM (95.74G).")
  assert fit_lib.compiler_out_of_memory(tpu) == int(134.0 * 2**30) + 1
  assert fit_lib.compiler_out_of_memory(
      jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory")) == 2**62
  assert fit_lib.compiler_out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: other")) is None
