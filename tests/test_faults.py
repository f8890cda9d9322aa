"""Bad inputs and faults, as a user meets them on the command line.

Each case runs ``python -m vae_lab.run`` or ``python -m vae_lab.evaluate`` (in this process,
through the same ``main``; the signal cases in a subprocess) beside a finished run and a
finished sweep, and checks: the exit status; that the message is one line naming the key or
file (and no traceback); that nothing already written (metrics.json, ``.hydra/``,
checkpoints, CSV, the other jobs of a sweep) changed.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, SHARED_DATA, SHRINK
from vae_lab import evaluate, run
from vae_lab.config.compose import compose_default
from vae_lab.config.validation import ConfigError
from vae_lab.evaluation.stages import ais as ais_stage
from vae_lab.records import run_folder
from vae_lab.records.outputs import EVAL_LOCK, read_metrics

#: the fixture's data: a sweep of two jobs, each a finished run
SWEEP_JOBS = ("0", "1")
DATA_FILES = {"mnist": ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")}
EVAL_QUICK = ["eval.gap_points=10", "eval.num_samples=20", "eval.ais_steps=5",
              "eval.qstar_max_steps=20", "eval.stages=[iw,qstar,ais]"]  # fmt: skip


def invoke(module: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """``python -m vae_lab.<module> ARGV`` in this process: its exit status and stderr."""
    monkeypatch.setattr(sys, "argv", [f"vae_lab.{module}", *argv])
    status = 0
    try:
        {"run": run.main, "evaluate": evaluate.main}[module]()
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return status, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` but the appended logs (``run.log``): path -> sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


# -- how a case prepares its folder ----------------------------------------------------------
def corrupt_gzip(tmp: Path) -> None:
    """binarized_mnist with a byte flipped inside its training file's compressed stream."""
    folder = tmp / "data" / "binarized_mnist"
    shutil.copytree(SHARED_DATA / "binarized_mnist", folder)
    path = folder / "binarized_mnist_train.amat.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def wrong_content(tmp: Path) -> None:
    """mnist whose training file is a good gzip of other bytes (fails its checksum)."""
    folder = tmp / "data" / "mnist"
    shutil.copytree(SHARED_DATA / "mnist", folder)
    (folder / DATA_FILES["mnist"][0]).write_bytes(gzip.compress(b"not mnist"))


def unreadable_file(tmp: Path) -> None:
    """mnist whose training file cannot be read (a folder in its place: unreadable as root too)."""
    folder = tmp / "data" / "mnist"
    shutil.copytree(SHARED_DATA / "mnist", folder)
    (folder / DATA_FILES["mnist"][0]).unlink()
    (folder / DATA_FILES["mnist"][0]).mkdir()


def root_is_a_file(tmp: Path) -> None:
    (tmp / "afile").write_text("not a folder")


def corrupt_checkpoint(tmp: Path) -> None:
    (tmp / "sweep" / "0" / "checkpoints" / "corrupt.ckpt").write_bytes(b"not a checkpoint")


def foreign_folder(tmp: Path) -> None:
    """``other``: a copy of job 0 recorded as another run (its own run_id)."""
    shutil.copytree(tmp / "sweep" / "0", tmp / "other")
    record = read_metrics(tmp / "other")
    (tmp / "other" / "metrics.json").write_text(json.dumps({**record, "run_id": "another"}))


def empty_folder(tmp: Path) -> None:
    (tmp / "empty").mkdir()


def training_folder(tmp: Path) -> None:
    """``training``: a copy of job 0 whose record says it is still training."""
    shutil.copytree(tmp / "sweep" / "0", tmp / "training")
    record = read_metrics(tmp / "training")
    (tmp / "training" / "metrics.json").write_text(json.dumps({**record, "status": "running"}))


def corrupt_record(tmp: Path) -> None:
    """``corrupt``: a copy of job 0 whose metrics.json was cut short."""
    shutil.copytree(tmp / "sweep" / "0", tmp / "corrupt")
    path = tmp / "corrupt" / "metrics.json"
    path.write_text(path.read_text()[:100])


@dataclass
class Case:
    argv: list[str]  # {tmp}: the case's folder; {run}: a finished run; {sweep}: its sweep
    status: int
    names: str  # what the message names: the key or file (formatted like argv)
    module: str = "run"
    setup: Callable[[Path], None] | None = None
    data: bool = False  # needs the shared datasets
    shrink: bool = True
    fields: dict = field(default_factory=dict)
    slow: bool = False  # run by `make test-full` only


NEW = "hydra.run.dir={tmp}/new"


def data_case(option: str, setup: Callable[[Path], None], names: str, slow: bool = False) -> Case:
    """``data=OPTION`` read from ``{tmp}/data``, which ``setup`` spoils; the message names
    the file under it."""
    return Case([f"data={option}", "data.root={tmp}/data", NEW], 2, "{tmp}/data/" + names,
                setup=setup, data=True, slow=slow)  # fmt: skip


CASES = {
    # config values, checked by the run or by the component that owns them
    "latent_dim": Case(["latent_dim=-1", NEW], 2, "latent_dim=-1"),
    "seed": Case(["seed=-3", NEW], 2, "seed=-3"),
    "kl_warmup_steps": Case(["kl_warmup_steps=-1", NEW], 2, "kl_warmup_steps=-1"),
    "eval.num_samples": Case(["eval.num_samples=1", NEW], 2, "eval.num_samples=1"),
    "eval.chunk_size": Case(["eval.chunk_size=0", NEW], 2, "eval.chunk_size=0"),
    "optim.lr": Case(["optim.lr=-0.1", NEW], 2, "optim.lr=-0.1"),
    "an optimizer without a fused form": Case(
        ["optim._target_=torch.optim.RMSprop", NEW], 2, "~optim.fused"
    ),
    "num_threads": Case(["num_threads=-1", NEW], 2, "num_threads=-1"),
    "posterior.num_flows": Case(
        ["posterior=planar", "posterior.num_flows=0", NEW], 2, "posterior.num_flows=0"
    ),  # fmt: skip
    "posterior.hidden_dim": Case(
        ["posterior=realnvp", "posterior.hidden_dim=-1", NEW], 2, "posterior.hidden_dim=-1"
    ),  # fmt: skip
    "posterior.num_householder": Case(
        ["posterior=sylvester", "posterior.num_householder=0", NEW],
        2,
        "posterior.num_householder=0",
    ),  # fmt: skip
    "prior.init": Case(["prior=vamp", "prior.init=pixels", NEW], 2, "prior.init=pixels"),
    "prior.num_components": Case(
        ["prior=mixture", "prior.num_components=0", NEW], 2, "prior.num_components=0"
    ),  # fmt: skip
    "vamp above the training set": Case(
        ["prior=vamp", "prior.num_components=100000", NEW], 2, "prior.num_components=100000"
    ),
    "data.batch_size": Case(["data.batch_size=0", NEW], 2, "data.batch_size=0"),
    "data.noise_std": Case(
        ["data=linear_gaussian", "likelihood=gaussian", "model=linear", "data.noise_std=-1", NEW],
        2,
        "data.noise_std=-1",
    ),  # fmt: skip
    "real data, Bernoulli": Case(["data=linear_gaussian", NEW], 2, "likelihood=gaussian"),
    "a GPU trainer without a GPU": Case(["trainer=gpu", NEW], 2, "trainer=cpu", shrink=False),
    "nan loss": Case(["+fault=nan_loss", NEW], 1, "optim.lr"),
    "unknown option": Case(["posterior=nope", NEW], 1, "posterior/nope"),
    "unknown key": Case(["nope=1", NEW], 1, "nope"),
    "resume=true": Case(["resume=true", NEW], 2, "resume=True"),
    # data files
    "missing data file": Case(
        ["data=mnist", "data.root={tmp}/nothing", NEW],
        2,
        "{tmp}/nothing/mnist/train-images-idx3-ubyte.gz",
    ),  # fmt: skip
    "data.root is a file": Case(
        ["data=mnist", "data.root={tmp}/afile", "data.download=true", NEW],
        2,
        "data.root={tmp}/afile",
        setup=root_is_a_file,
    ),  # fmt: skip
    "corrupt gzip": data_case(
        "binarized_mnist", corrupt_gzip, "binarized_mnist/binarized_mnist_train.amat.gz is corrupt"
    ),
    "checksum": data_case(
        "mnist", wrong_content, "mnist/train-images-idx3-ubyte.gz fails its checksum", slow=True
    ),
    "unreadable data file": data_case(
        "mnist", unreadable_file, "mnist/train-images-idx3-ubyte.gz (Is a directory)", slow=True
    ),
    # run folders: one run each, one sweep each, resumed only under their saved config
    "run into a run folder": Case(["hydra.run.dir={run}"], 2, "{run} already holds a run"),
    "sweep into a sweep folder": Case(
        ["-m", "seed=2,3", "hydra.sweep.dir={sweep}"],
        2,
        "{sweep} already holds the runs of another sweep",
    ),  # fmt: skip
    "resume with another seed": Case(["resume={run}", "seed=3"], 2, "seed=3"),
    "resume with another family": Case(["resume={run}", "posterior=flow"], 2, "posterior=flow"),
    "resume a folder without a run": Case(
        ["resume={tmp}/empty"], 2, "resume={tmp}/empty", setup=empty_folder
    ),  # fmt: skip
    "resume into another folder": Case(
        ["resume={run}", "hydra.run.dir={tmp}/new"], 2, "resume={run} with hydra.run.dir={tmp}/new"
    ),  # fmt: skip
    "resume a corrupt record": Case(
        ["resume={tmp}/corrupt"], 2, "{tmp}/corrupt/metrics.json is not", setup=corrupt_record
    ),  # fmt: skip
    "resume in a sweep": Case(
        ["-m", "resume={run}", "hydra.sweep.dir={tmp}/s"], 1, "resume", fields={"stdout": True}
    ),  # fmt: skip
    # evaluate
    "evaluate another family": Case(
        ["run_dir={run}", "posterior=planar"], 2, "posterior=planar", "evaluate"
    ),  # fmt: skip
    "evaluate eval.split": Case(
        ["run_dir={run}", "eval.split=bogus"], 2, "eval.split=bogus", "evaluate"
    ),  # fmt: skip
    "evaluate unknown key": Case(["run_dir={run}", "eval.nope=1"], 1, "eval.nope", "evaluate"),
    "evaluate q* family": Case(
        ["run_dir={run}", "eval.qstar_family=nope", *EVAL_QUICK],
        2,
        "eval.qstar_family=nope",
        "evaluate",
    ),  # fmt: skip
    "evaluate no run": Case(
        ["run_dir={tmp}/empty"], 2, "run_dir={tmp}/empty", "evaluate", setup=empty_folder
    ),  # fmt: skip
    "evaluate missing checkpoint": Case(
        ["ckpt_path={tmp}/nope.ckpt"], 2, "ckpt_path={tmp}/nope.ckpt", "evaluate"
    ),  # fmt: skip
    "evaluate corrupt checkpoint": Case(
        ["ckpt_path={run}/checkpoints/corrupt.ckpt"],
        2,
        "ckpt_path={run}/checkpoints/corrupt.ckpt",
        "evaluate",
        setup=corrupt_checkpoint,
    ),  # fmt: skip
    "evaluate a run still training": Case(
        ["run_dir={tmp}/training", *EVAL_QUICK],
        2,
        "{tmp}/training is still training",
        "evaluate",
        setup=training_folder,
    ),  # fmt: skip
    "evaluate a corrupt record": Case(
        ["run_dir={tmp}/corrupt", *EVAL_QUICK],
        2,
        "{tmp}/corrupt/metrics.json is not",
        "evaluate",
        setup=corrupt_record,
    ),  # fmt: skip
    "evaluate a foreign checkpoint": Case(
        ["run_dir={tmp}/other", "ckpt_path={run}/checkpoints/best.ckpt", *EVAL_QUICK],
        2,
        "is a checkpoint of another run",
        "evaluate",
        setup=foreign_folder,
    ),  # fmt: skip
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if c.slow else n for n, c in CASES.items()]
)
def test_bad_input_is_one_line_and_changes_nothing(name, finished, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    if case.data and not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"the shared datasets are not at {SHARED_DATA}")
    if name == "a GPU trainer without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    shutil.copytree(finished, tmp_path / "sweep")
    if case.setup is not None:
        case.setup(tmp_path)
    places = {"tmp": tmp_path, "run": tmp_path / "sweep" / "0", "sweep": tmp_path / "sweep"}
    before = snapshot(tmp_path)
    argv = [a.format(**places) for a in case.argv]
    shrink = SHRINK if case.module == "run" and case.shrink and argv[0] != "-m" else []
    if argv[0].startswith("resume="):
        shrink = []  # a resumed run takes its saved config
    status, err = invoke(case.module, [*shrink, *argv], monkeypatch, capsys)

    assert status == case.status, err[-2000:]
    assert "Traceback" not in err
    if not case.fields.get("stdout"):
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        message = errors[0] if errors else lines[0]  # Hydra's own errors: their first line
        assert len(errors) <= 1, err
        assert case.names.format(**places) in message, message
    after = snapshot(tmp_path)
    changed = {p for p in before if before[p] != after.get(p)}
    assert not changed, changed  # nothing already written changed (or vanished)
    finished_runs = {p for p in after if p.startswith("sweep/")}
    assert finished_runs == {p for p in before if p.startswith("sweep/")}  # nor added to them


def test_an_evaluation_holds_its_run_against_another_and_against_resuming(
    finished, tmp_path, monkeypatch, capsys
):
    """Two evaluations of one run, or an evaluation and the run's resumed training, would
    retire and rewrite each other's records."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished / "0", run_dir)
    with open(run_dir / EVAL_LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running evaluation holds it
        before = snapshot(tmp_path)
        status, err = invoke("evaluate", [f"run_dir={run_dir}", *EVAL_QUICK], monkeypatch, capsys)
        assert status == 2, err[-2000:]
        assert f"error: {run_dir} is being evaluated by another process" in err
        assert snapshot(tmp_path) == before
    status, err = invoke("evaluate", [f"run_dir={run_dir}", *EVAL_QUICK], monkeypatch, capsys)
    assert status == 0, err[-2000:]  # released: evaluated
    assert read_metrics(run_dir)["eval/split"] == "test"
    with open(run_dir / EVAL_LOCK) as held:  # its training resumed under an evaluation
        fcntl.flock(held, fcntl.LOCK_EX)
        before = snapshot(tmp_path)
        resume = [f"resume={run_dir}", "trainer.max_epochs=2"]  # completed: extended
        status, err = invoke("run", resume, monkeypatch, capsys)
        assert status == 2, err[-2000:]
        assert f"error: {run_dir} is being evaluated by another process" in err
        assert f"resume it (python -m vae_lab.run resume={run_dir})" in err
        assert snapshot(tmp_path) == before


def run_cli(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vae_lab.run", *argv], cwd=cwd, capture_output=True, text=True,
        timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.parametrize("sig", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow)])
def test_a_signal_records_interrupted_and_exits_128_plus_it(sig, tmp_path):
    folder = tmp_path / "run"
    result = run_cli(*SHRINK, "+fault=sigterm", f"callbacks.fault.signal={sig}",
                     "callbacks.fault.at_step=1", f"hydra.run.dir={folder}")  # fmt: skip
    assert result.returncode == 128 + signal.Signals[sig], result.stderr[-2000:]
    command = f"python -m vae_lab.run resume={folder}"
    assert (
        result.stderr.strip().splitlines()[-1] == f"interrupted by {sig}: continue with {command}"
    )
    record = read_metrics(folder)
    assert record["status"] == "interrupted" and command in record["error"]
    assert "💡" not in result.stdout + result.stderr  # Lightning's advertisement is silenced
    assert "LeafSpec" not in result.stderr  # and so is its internal deprecation warning


@pytest.mark.slow  # a sweep in a subprocess: make test-full
def test_a_sweep_stopped_by_sigterm_says_how_its_jobs_ended(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *SHRINK, "+fault=none,sigterm,none", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    assert "1 completed, 1 interrupted, 1 not started" in result.stdout
    assert result.stderr.strip().splitlines()[-1].endswith(f"resume={sweep / '1'}")
    assert [read_metrics(sweep / j)["status"] for j in ("0", "1")] == ["completed", "interrupted"]
    assert not (sweep / "2").exists()


def test_evaluate_refuses_a_folder_it_cannot_write_before_any_work(finished, tmp_path, monkeypatch):
    shutil.copytree(finished / "0", tmp_path / "run")
    before = snapshot(tmp_path / "run")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_folder.tempfile, "NamedTemporaryFile", read_only)
    monkeypatch.setattr(evaluate, "build_datamodule", lambda cfg: pytest.fail("work started"))
    with pytest.raises(ConfigError, match=f"cannot write into {tmp_path / 'run'}"):
        evaluate.evaluate_run(evaluate.locate(str(tmp_path / "run"), None)[0],
                              compose_default(), [])  # fmt: skip
    assert snapshot(tmp_path / "run") == before


def test_several_evaluations_each_fail_alone(finished, tmp_path, monkeypatch, capsys):
    shutil.copytree(finished, tmp_path / "sweep")
    runs = [tmp_path / "nothing", tmp_path / "sweep" / "1"]
    argv = ["-m", f"run_dir={runs[0]},{runs[1]}", *EVAL_QUICK]
    status, err = invoke("evaluate", argv, monkeypatch, capsys)
    assert status == 1
    assert f"error: {runs[0]}: run_dir={runs[0]} is not a run or sweep folder" in err
    assert read_metrics(runs[1])["eval/log_px"] < 0  # the second was evaluated all the same
    assert json.loads((runs[1] / "eval.json").read_text())["status"] == "completed"


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_re_evaluating_a_run_keeps_each_earlier_eval_json(finished, tmp_path, monkeypatch, capsys):
    shutil.copytree(finished / "0", tmp_path / "run")
    for num_samples in (20, 30, 40):
        argv = [f"run_dir={tmp_path / 'run'}", *EVAL_QUICK, f"eval.num_samples={num_samples}"]
        assert invoke("evaluate", argv, monkeypatch, capsys)[0] == 0

    def samples_of(path: Path) -> int:
        return json.loads(path.read_text())["eval"]["num_samples"]

    assert samples_of(tmp_path / "run" / "eval.json") == 40
    history = tmp_path / "run" / "evals"
    assert sorted(p.name for p in history.iterdir()) == ["1.json", "2.json"]
    assert [samples_of(history / f"{n}.json") for n in (1, 2)] == [20, 30]


def test_an_interrupted_evaluation_says_so_and_its_record_holds_its_own_figures_alone(
    finished, tmp_path, monkeypatch, capsys
):
    """Ctrl-C during AIS, after an earlier evaluation wrote every stage: exit 130 with one line;
    eval.json records the stages done as interrupted, and metrics.json holds the figures of
    this evaluation alone, the earlier one's kept whole in evals/1.json."""
    shutil.copytree(finished / "0", tmp_path / "run")
    argv = [f"run_dir={tmp_path / 'run'}", *EVAL_QUICK]
    assert invoke("evaluate", [*argv, "eval.num_samples=30"], monkeypatch, capsys)[0] == 0
    earlier = json.loads((tmp_path / "run" / "eval.json").read_text())

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ais_stage, "ais_log_px", pressed)
    status, err = invoke("evaluate", argv, monkeypatch, capsys)
    assert status == 128 + signal.SIGINT
    assert err.strip().splitlines()[-1].startswith("interrupted by SIGINT: eval.json keeps")
    assert "Traceback" not in err
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert written["status"] == "interrupted" and written["error"] == "interrupted by SIGINT"
    assert written["eval"]["num_samples"] == 20
    assert json.loads((tmp_path / "run" / "evals" / "1.json").read_text()) == earlier
    figures = {k: v for k, v in read_metrics(tmp_path / "run").items() if k.startswith("eval/")}
    assert figures.pop("eval/split") == written["split"]
    assert "eval/log_px" in figures and figures == {k: written[k] for k in figures}
    assert set(figures) < {k for k in earlier if k.startswith("eval/")}  # AIS's are gone


def test_a_resumed_run_retires_the_evaluation_of_its_earlier_checkpoint(
    finished, tmp_path, monkeypatch, capsys
):
    shutil.copytree(finished / "0", tmp_path / "run")
    argv = [f"run_dir={tmp_path / 'run'}", *EVAL_QUICK]
    assert invoke("evaluate", argv, monkeypatch, capsys)[0] == 0
    earlier = json.loads((tmp_path / "run" / "eval.json").read_text())
    resume = [f"resume={tmp_path / 'run'}", "trainer.max_epochs=2"]
    status, err = invoke("run", resume, monkeypatch, capsys)
    assert status == 0, err[-2000:]
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "completed" and "test/log_px" in record
    assert not [k for k in record if k.startswith("eval/")]
    assert not (tmp_path / "run" / "eval.json").exists()
    assert json.loads((tmp_path / "run" / "evals" / "1.json").read_text()) == earlier
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]  # what evaluate reads is the run's best


def test_evaluate_writes_each_stage_as_it_ends_and_files_are_readable_by_others(
    finished, tmp_path, monkeypatch
):
    """A stage that fails (here AIS) loses nothing of the stages before it."""
    shutil.copytree(finished / "0", tmp_path / "run")

    def broken(*args, **kwargs):
        raise RuntimeError("AIS broke")

    monkeypatch.setattr(ais_stage, "ais_log_px", broken)
    with evaluate.initialize_config_dir(config_dir=str(evaluate.CONF_DIR), version_base="1.3"):
        request = evaluate.compose("evaluate", overrides=EVAL_QUICK)
        with pytest.raises(RuntimeError, match="AIS broke"):
            evaluate.evaluate_run(evaluate.locate(str(tmp_path / "run"), None)[0], request,
                                  EVAL_QUICK)  # fmt: skip
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert written["status"] == "failed" and written["error"] == "RuntimeError: AIS broke"
    assert written["eval"]["num_samples"] == 20
    for key in ("eval/log_px", "eval/elbo", "eval/psis_khat", "eval/time_iw_s"):
        assert key in written and key in read_metrics(tmp_path / "run"), key
    umask = os.umask(0)
    os.umask(umask)
    for name in ("eval.json", "metrics.json"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_evaluate_gives_a_run_today_s_defaults_for_keys_it_predates(
    finished, tmp_path, monkeypatch, capsys
):
    shutil.copytree(finished / "1", tmp_path / "run")
    saved = tmp_path / "run" / ".hydra" / "config.yaml"
    old = "\n".join(
        line
        for line in saved.read_text().splitlines()
        if not line.startswith(("lr_schedule", "kl_warmup_steps"))
    )  # a run made before these top-level keys existed
    saved.write_text(old)
    status, err = invoke("evaluate", [f"run_dir={tmp_path / 'run'}", *EVAL_QUICK], monkeypatch,
                         capsys)  # fmt: skip
    assert status == 0, err[-2000:]
    assert read_metrics(tmp_path / "run")["eval/log_px"] < 0


def test_a_sweep_folder_evaluates_each_of_its_runs(finished, tmp_path, monkeypatch, capsys):
    sweep = shutil.copytree(finished, tmp_path / "sweep")
    status, err = invoke("evaluate", [f"run_dir={sweep}", *EVAL_QUICK], monkeypatch, capsys)
    assert status == 0, err
    for job in ("0", "1"):
        assert json.loads((sweep / job / "eval.json").read_text())["status"] == "completed"
