"""Training survives what long runs meet: broken files, a diverging loss, a killed process, a failing disk."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from utils import load_checkpoint, save_checkpoint


def run_in_process(argv) -> dict:
    return train.train(train.parse_args(argv))


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


@pytest.mark.parametrize("cache", ["--cache", "--no-cache"])
def test_five_percent_corrupt_files_train_to_the_end_and_are_counted(cache, tmp_path, make_photo_folder,
                                                                     corrupt_files, tiny_argv, capsys):
    folder = tmp_path / "photos"
    good = make_photo_folder(folder, n=38)
    bad = corrupt_files(folder, good[0])  # 2 of 40 files: a text file and a truncated JPEG
    # Batches of one, so that every training image is decoded in the epoch, also when streaming.
    result = run_in_process(tiny_argv(folder, tmp_path / "run", cache, "--epochs", "1", "--batch-size", "1"))
    assert result["stopped"] is None and result["epoch"] == 1
    assert load_checkpoint(str(tmp_path / "run" / "last.pt"))["step"] == result["step"] >= 30
    assert result["skipped"] == 2
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image file(s) in all" in err
    for p in bad:
        assert err.count(p.name) == 1, err  # each broken file reported once


def test_a_non_finite_loss_stops_the_cli_with_one_line_and_saves_nothing_non_finite(photo_dir, tmp_path,
                                                                                   tiny_argv, run_cli):
    out = tmp_path / "run"
    r = run_cli("train.py", *tiny_argv(photo_dir, out, "--lr", "1e30", "--warmup-steps", "1",
                                       "--checkpoint-every", "1", "--epochs", "3"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: non-finite")
    last = out / "last.pt"
    if last.exists():  # whatever was saved before the blow-up is usable
        ckpt = load_checkpoint(str(last))
        assert all_finite(ckpt["model"]) and f"{last} (step {ckpt['step']})" in lines[0]
    else:
        assert "no checkpoint was written" in lines[0]


def test_a_non_finite_loss_keeps_the_last_good_checkpoint(photo_dir, tmp_path, tiny_argv, monkeypatch, capsys):
    """The 7th training loss is NaN (so the 7th update makes every weight NaN); with a checkpoint every
    2 steps the run must stop at the next check, before it saves, leaving the step-6 checkpoint."""
    calls = []
    real_loss = train.Criterion.__call__

    def nan_from_the_7th_step(self, out, ab_n):
        loss = real_loss(self, out, ab_n)
        if torch.is_grad_enabled():  # a training step, not validation
            calls.append(1)
            if len(calls) >= 7:
                loss = loss * float("nan")
        return loss

    monkeypatch.setattr(train.Criterion, "__call__", nan_from_the_7th_step)
    out = tmp_path / "run"
    rc = train.main(tiny_argv(photo_dir, out, "--checkpoint-every", "2", "--epochs", "4"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: non-finite"), err
    assert f"{out / 'last.pt'} (step 6)" in err[0]
    ckpt = load_checkpoint(str(out / "last.pt"))
    assert ckpt["step"] == 6 and ckpt["step_in_epoch"] > 0 and all_finite(ckpt["model"])
    assert len(calls) < 10  # it stopped at the check after the NaN, not at the end of the epoch


def kill_at_a_mid_epoch_checkpoint(proc: subprocess.Popen, last, timeout: float = 300) -> bool:
    """SIGKILL proc as soon as `last` is a mid-epoch checkpoint; False if proc ended first.

    The process is frozen (SIGSTOP) while the file is read, so the checkpoint it leaves behind is the one
    seen, however slowly this process is scheduled.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if last.exists():  # written atomically, so always complete
            proc.send_signal(signal.SIGSTOP)
            if torch.load(last, map_location="cpu", weights_only=True)["step_in_epoch"] > 0:
                proc.send_signal(signal.SIGKILL)
                return proc.wait() == -signal.SIGKILL
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    return False


def test_sigkill_mid_epoch_then_resume_loses_nothing(photo_dir, tmp_path, tiny_argv, repo, child_env, capsys):
    """A real process, killed right after a mid-epoch checkpoint; --resume then ends with the very weights
    of a run that was never interrupted, its step counter continuing from the checkpoint's."""
    args = ["--batch-size", "1", "--epochs", "2", "--checkpoint-every", "3", "--lr", "3e-3", "--warmup-steps", "2",
            "--cache"]
    out = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(repo / "train.py"), *tiny_argv(photo_dir, out, *args)],
                                cwd=repo, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    last = out / "last.pt"
    try:
        killed = kill_at_a_mid_epoch_checkpoint(proc, last)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed, "training ended before a mid-epoch checkpoint: " + (tmp_path / "killed.log").read_text()

    ckpt = load_checkpoint(str(last))
    straight = run_in_process(tiny_argv(photo_dir, tmp_path / "straight", *args))
    assert 0 < ckpt["step"] < straight["step"] and ckpt["step"] % 3 == 0 and ckpt["step_in_epoch"] > 0
    capsys.readouterr()
    resumed = run_in_process(tiny_argv(photo_dir, out, *args, "--resume", last))
    assert f"step {ckpt['step']}" in capsys.readouterr().out
    assert resumed["step"] == straight["step"] and resumed["epoch"] == 2
    final = load_checkpoint(str(out / "last.pt"))
    reference = load_checkpoint(str(tmp_path / "straight" / "last.pt"))
    assert final["step"] == reference["step"]
    assert all(torch.equal(final["model"][k], reference["model"][k]) for k in reference["model"])
    with open(out / "metrics.jsonl") as f:
        assert [json.loads(x)["epoch"] for x in f] == [1, 2]


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(photo_dir, tmp_path, tiny_argv, monkeypatch,
                                                                  capsys):
    """Checkpoint writes fail as on a read-only or full disk (os.replace raises: chmod cannot stop root).
    The run stops with one line naming the file; the previous last.pt is untouched and loads."""
    out = tmp_path / "run"
    first = run_in_process(tiny_argv(photo_dir, out, "--epochs", "1"))
    before = (out / "last.pt").read_bytes()
    real_replace = os.replace

    def read_only_for_checkpoints(src, dst, **kw):
        if str(dst).endswith(".pt"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "replace", read_only_for_checkpoints)
    capsys.readouterr()
    rc = train.main(tiny_argv(photo_dir, out, "--epochs", "2", "--checkpoint-every", "2",
                              "--resume", out / "last.pt"))
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "last.pt" in err[0] and "cannot write" in err[0], err
    assert (out / "last.pt").read_bytes() == before
    assert load_checkpoint(str(out / "last.pt"))["step"] == first["step"]
    assert not list(out.glob(".tmp_*"))


def test_save_checkpoint_failing_midway_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "model_config": {}}, str(path))
    before = path.read_bytes()

    def disk_full(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "model_config": {}}, str(path))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_sigterm_while_a_checkpoint_is_written_leaves_the_previous_one_and_no_temporary(
        photo_dir, tmp_path, tiny_argv, repo, child_env):
    """A scheduler's SIGTERM in the middle of writing last.pt: the process ends by that signal with one line
    saying how to resume; the half-written temporary file is gone and last.pt is the previous checkpoint."""
    out = tmp_path / "run"
    argv = tiny_argv(photo_dir, out, "--batch-size", "1", "--epochs", "1", "--checkpoint-every", "2")
    # The second checkpoint write stalls after torch.save has filled its temporary file.
    code = ("import sys, time, torch, train\n"
            "save, calls = torch.save, []\n"
            "def stalling_save(obj, f, *a, **k):\n"
            "    save(obj, f, *a, **k)\n"
            "    calls.append(1)\n"
            "    if len(calls) == 2:\n"
            "        f.flush(); print('WRITING', obj['step'], flush=True); time.sleep(120)\n"
            "torch.save = stalling_save\n"
            f"sys.exit(train.main({[str(a) for a in argv]!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo, env=child_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while proc.poll() is None and not line.startswith("WRITING"):
            line = proc.stdout.readline()
        assert line.startswith("WRITING"), proc.stderr.read()
        assert [p.name for p in out.glob(".tmp_*")], "the stalled write has a temporary file"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert err.strip().splitlines()[-1] == f"stopped by SIGTERM; resume with --resume {out / 'last.pt'}"
    assert not list(out.glob(".tmp_*"))
    assert load_checkpoint(str(out / "last.pt"))["step"] == 2  # the first checkpoint, intact
