"""phi_jax's one entry point in a checkout: `python run.py` is `phi-jax-run` (recipe/main.py).

    python run.py                                   # configs/tiny.py: whole pipeline on CPU
    python run.py --config=configs/phi1.py --workdir=/data/phi1
    python run.py --config=tiny --config.model.num_layers=2 --stages=init,sample
    python run.py --plan                            # what would run, be skipped or refused
    python run.py --serve                           # the run's model behind the server
    python run.py --report=workdir/tiny             # rebuild its report, run nothing

Every stage (and every step of the data stage) writes under WORKDIR and is skipped when
its output is complete and its inputs did not change, so a run that died resumes where
it stopped (recipe/runner.py decides; docs/architecture.md).
"""

from recipe import main

if __name__ == "__main__":
  main.PROG = "run.py"
  main.entry()
