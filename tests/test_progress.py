import io

from latentlocal import progress as progress_mod
from latentlocal.progress import ProgressBar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _clock(monkeypatch, times):
    it = iter(times)
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(it))


def test_eta_counts_only_this_runs_work(monkeypatch):
    _clock(monkeypatch, [0.0, 0.0, 60.0])  # init, first update, second
    out = io.StringIO()
    bar = ProgressBar(100, stream=out)
    bar.update(50, "resuming", new=False)  # 50 finished in an earlier run
    assert "ETA ?" in out.getvalue()
    bar.update(51, "cot p51")  # 1 new problem in 60 s: 49 left take 49 minutes
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[############............] 51/100 1.0 problems/min, ETA 49.0 min  cot p51")


def test_log_gets_one_line_per_update_terminal_one_redrawn_line(monkeypatch):
    _clock(monkeypatch, [0.0, 30.0, 60.0, 0.0, 30.0, 60.0])
    log = io.StringIO()
    bar = ProgressBar(2, unit="traces", stream=log)
    bar.update(1, "a")
    bar.update(2, "b")
    bar.close()
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) == 2
    assert "2.0 traces/min" in log.getvalue().splitlines()[0]

    tty = _Tty()
    bar = ProgressBar(2, unit="traces", stream=tty)
    bar.update(1, "a")
    bar.update(2, "b")
    bar.close()
    text = tty.getvalue()
    assert text.count("\r\x1b[2K") == 2 and text.endswith("\n") and text.count("\n") == 1


def test_total_grows_to_what_is_done_or_is_given_late():
    out = io.StringIO()
    bar = ProgressBar(stream=out)  # total not known yet
    bar.update(3)
    assert "3/3" in out.getvalue()
    bar.update(4, total=10)
    assert out.getvalue().splitlines()[-1].startswith("[#########...............] 4/10 ")
