"""launch/: the TPU VM and SLURM launchers start the same phi-jax-run on every host,
with each host's process id (gcloud, scontrol, srun and phi-jax-run are stand-ins here)."""

import os
import shlex
import signal
import stat
import subprocess
import time

from tests.conftest import REPO_ROOT


def _script(path, text):
  path.write_text("#!/usr/bin/env bash\n" + text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_tpu_vm_runs_one_command_on_every_worker(tmp_path):
  _script(tmp_path / "gcloud", 'printf "%s\\n" "$@" > "$OUT"\n')
  env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", OUT=str(tmp_path / "args"),
             PHI_JAX_INSTALL="phi-jax[tpu,data] @ git+https://example.com/phi_jax",
             PROJECT="my-project")
  subprocess.run([os.path.join(REPO_ROOT, "launch", "tpu_vm.sh"), "v5e-32", "us-west4-a",
                  "--config=phi1", "--workdir=/mnt/shared/phi 1"], env=env, check=True)
  args = (tmp_path / "args").read_text().splitlines()
  assert args[:6] == ["compute", "tpus", "tpu-vm", "ssh", "v5e-32", "--zone=us-west4-a"]
  assert "--worker=all" in args and "--project=my-project" in args
  command = next(a for a in args if a.startswith("--command="))[len("--command="):]
  steps = [shlex.split(s) for s in command.split("; ")]
  assert ["python3", "-m", "pip", "install", "-q",
          "phi-jax[tpu,data] @ git+https://example.com/phi_jax"] in steps
  assert steps[-1] == ["phi-jax-run", "--config=phi1", "--workdir=/mnt/shared/phi 1"]


def test_tpu_vm_without_arguments_prints_its_usage():
  result = subprocess.run([os.path.join(REPO_ROOT, "launch", "tpu_vm.sh")],
                          capture_output=True, text=True)
  assert result.returncode == 2 and "--worker=all" in result.stderr


def test_slurm_gives_each_task_the_coordinator_and_its_process_id(tmp_path):
  _script(tmp_path / "scontrol", 'printf "gpu-node-07\\ngpu-node-08\\n"\n')
  # srun: the command once per task, as SLURM would on each node
  _script(tmp_path / "srun", 'for i in 0 1; do SLURM_PROCID=$i "$@"; done\n')
  _script(tmp_path / "phi-jax-run", 'echo "$*" >> "$OUT"\n')
  env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", OUT=str(tmp_path / "runs"),
             SLURM_JOB_NODELIST="gpu-node-[07-08]", SLURM_NTASKS="2", SLURM_NNODES="2")
  subprocess.run(["bash", os.path.join(REPO_ROOT, "launch", "slurm.sbatch"), "--config=phi1",
                  "--workdir=/shared/phi 1"], env=env, check=True, capture_output=True)
  runs = (tmp_path / "runs").read_text().splitlines()
  assert runs == [
      f"--coordinator_address=gpu-node-07:12355 --num_processes=2 --process_id={i} "
      "--config=phi1 --workdir=/shared/phi 1" for i in (0, 1)]


def test_slurm_sigterm_stops_the_tasks_then_requeues_the_job(tmp_path):
  """SLURM's SIGTERM before the time limit (--signal=B:TERM@120): the script passes it
  to srun, waits for the tasks to stop and requeues the job (--requeue)."""
  out = tmp_path / "events"
  _script(tmp_path / "scontrol", 'if [[ $1 == show ]]; then printf "gpu-node-07\\n"; '
          'else echo "scontrol $*" >> "$OUT"; fi\n')
  _script(tmp_path / "srun", 'trap \'echo "tasks got TERM" >> "$OUT"; exit 143\' TERM\n'
          'echo started >> "$OUT"\nwhile true; do sleep 0.1; done\n')
  env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", OUT=str(out),
             SLURM_JOB_NODELIST="gpu-node-07", SLURM_NTASKS="1", SLURM_NNODES="1",
             SLURM_JOB_ID="4242")
  script = os.path.join(REPO_ROOT, "launch", "slurm.sbatch")
  with open(script) as f:
    assert "#SBATCH --requeue" in f.read()
  batch = subprocess.Popen(["bash", script, "--config=phi1"], env=env,
                           stdout=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 30
  while not (out.exists() and "started" in out.read_text()):
    assert time.monotonic() < deadline and batch.poll() is None
    time.sleep(0.1)
  batch.send_signal(signal.SIGTERM)
  stdout, _ = batch.communicate(timeout=30)
  assert batch.returncode == 0, stdout
  assert out.read_text().splitlines() == ["started", "tasks got TERM",
                                          "scontrol requeue 4242"]
