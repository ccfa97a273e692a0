"""Training statistics: collected per category (``<run-id>_<Behavior>``) and written every
``summary_freq`` steps as means to TensorBoard, the console, a CSV file and timer gauges, with
ML-Agents' stat names."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from palaestra.checkpoints import SaveError, atomic_write_text, os_reason, remove_partial_files
from palaestra.timers import TIMERS

logger = logging.getLogger("palaestra")


@dataclass
class StatSummary:
    mean: float
    std: float
    count: int


class StatsWriter(Protocol):
    def write(self, category: str, step: int, values: dict[str, StatSummary]) -> None: ...

    def close(self) -> None: ...


class StatsReporter:
    """Collects values per key for one category; ``write`` emits means and clears."""

    def __init__(self, category: str, writers: list[StatsWriter]) -> None:
        self.category = category
        self.writers = writers
        self.values: dict[str, list[float]] = {}
        self.summed: set[str] = set()  # keys reported as the sum of their values, not the mean

    def add(self, key: str, value: float | Iterable[float]) -> None:
        bucket = self.values.setdefault(key, [])
        if isinstance(value, (int, float)):
            bucket.append(float(value))
        else:
            bucket.extend(float(v) for v in value)

    def set(self, key: str, value: float) -> None:
        self.values[key] = [float(value)]

    def set_if_missing(self, key: str, value: float) -> None:
        """``value`` for a period in which nothing reported ``key``."""
        if not self.values.get(key):
            self.set(key, value)

    def add_to_sum(self, key: str, values: Iterable[float]) -> None:
        """Values whose sum over the summary period is reported (an environment's summed stats)."""
        self.summed.add(key)
        self.add(key, values)

    def write(self, step: int) -> dict[str, StatSummary]:
        summary = {}
        for key, vals in self.values.items():
            if not vals:
                continue
            if key in self.summed:
                try:
                    total = math.fsum(vals)
                except OverflowError:  # (fsum's exact partial sums overflow where a plain sum gives inf)
                    total = sum(vals)
                summary[key] = StatSummary(total, 0.0, len(vals))
                continue
            mean = sum(vals) / len(vals)
            var = sum((v - mean) * (v - mean) for v in vals) / len(vals)  # (** raises on overflow, * gives inf)
            summary[key] = StatSummary(mean, math.sqrt(var), len(vals))
        for writer in self.writers:
            writer.write(self.category, step, summary)
        self.values = {}
        return summary


class TensorBoardWriter:
    def __init__(self, summaries_dir: Path, category: str, clear_old: bool, resume_step: int | None = None) -> None:
        """``resume_step`` (--resume): the step the run continues from; TensorBoard hides what an
        earlier process wrote past it (a run killed after its last checkpoint), so no step shows
        twice."""
        from torch.utils.tensorboard import (
            SummaryWriter,  # imported late: it is slow to import
        )

        log_dir = (summaries_dir / category).resolve()  # its writer thread must not depend on the cwd
        self.log_dir = log_dir
        _quiet_writer_thread_errors()  # (before the writer: it writes its first event at once, a full disk included)
        log_dir.mkdir(parents=True, exist_ok=True)  # (a file in its place: the run says which, and what to do)
        with self._named_errors():
            if clear_old and log_dir.exists():
                for f in log_dir.glob("events.out*"):
                    f.unlink()
            purge = resume_step + 1 if resume_step is not None else None
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def write_text(self, tag: str, text: str) -> None:
        with self._named_errors():
            self.writer.add_text(tag, text, 0)

    def write_settings(self, settings: dict) -> None:
        """The behavior's resolved settings as TensorBoard's Text tab shows a table (its text is
        Markdown, in which a YAML dump runs together into one line): a row per key, nested
        settings (reward_signals, ...) in YAML's one-line form, as ML-Agents' two-column table."""
        import yaml

        def cell(value: object) -> str:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
            text = text.removesuffix("\n...")  # a lone scalar's document end marker
            return text.replace("|", "\\|")

        rows = [f"| {key} | {cell(value)} |" for key, value in settings.items()]
        self.write_text("Hyperparameters", "\n".join(["| setting | value |", "|---|---|", *rows]))

    def write(self, category: str, step: int, values: dict[str, StatSummary]) -> None:
        with self._named_errors():
            for key, s in values.items():
                self.writer.add_scalar(key, s.mean, step)
            self.writer.flush()

    def close(self) -> None:
        with self._named_errors():
            self.writer.close()

    def _named_errors(self):
        return _saving(f"the TensorBoard summaries in {self.log_dir}")


class ConsoleWriter:
    """The summary line: "Training." while the behavior still learns ("Is Training" > 0; as in
    ML-Agents it turns 0 past max_steps, while other behaviors finish)."""

    def __init__(self, start_time: float, is_training: bool) -> None:
        self.start_time = start_time
        self.is_training = is_training

    def write(self, category: str, step: int, values: dict[str, StatSummary]) -> None:
        import time

        elapsed = time.time() - self.start_time
        reward = values.get("Environment/Cumulative Reward")
        learning = values.get("Is Training")
        training = self.is_training if learning is None else learning.mean > 0.0
        state = "Training." if training else "Not Training."
        if reward is not None:
            logger.info(
                "%s: Step: %d. Time Elapsed: %.3f s Mean Reward: %.3f. Std of Reward: %.3f. %s",  # ML-Agents' words
                category, step, elapsed, reward.mean, reward.std, state,
            )
        else:
            logger.info("%s: Step: %d. No episode was completed since last summary. %s", category, step, state)
        elo = values.get("Self-play/ELO")
        if elo is not None:  # as ML-Agents, a line of its own
            logger.info("%s ELO: %.3f.", category, elo.mean)

    def close(self) -> None:
        pass


class CSVWriter:
    """``summaries/<category>.csv``: one row per summary, ``Steps`` and then every stat seen so far,
    in sorted order; a cell is empty where the summary lacks the stat (no episode ended, no update
    yet). ML-Agents 0.16 fixed the header at the first summary with an episode, so stats that came
    later (the losses, after the first update) never reached the file; here a new stat widens the
    header, the file rewritten whole (atomically) with the earlier rows' new cells empty."""

    def __init__(self, summaries_dir: Path, category: str, append: bool, resume_step: int | None = None) -> None:
        """``append`` (--resume): keep the earlier rows, up to ``resume_step`` (the step the run
        continues from: rows an earlier process wrote after its last checkpoint, and a row cut
        short when it was killed, are dropped, so that the steps keep increasing)."""
        self.path = summaries_dir / f"{category}.csv"
        self.keys: list[str] = []
        # rows not written yet because the file was locked (a spreadsheet holding it open on
        # Windows): kept, and written with the next row that can be
        self.pending: list[tuple[int, dict[str, StatSummary]]] = []
        remove_partial_files(summaries_dir, re.escape(self.path.name))  # a kill's during an earlier rewrite
        read = self._earlier_rows() if append and self.path.exists() else None
        if read is not None:
            text, rows = read
            header = rows[0] if rows else None
            self.keys = header[1:] if header else []
            kept = [r for r in rows[1:] if len(r) == len(header) and (resume_step is None or _step(r[0]) <= resume_step)]
            if header and (len(kept) != len(rows) - 1 or not text.endswith("\n")):
                out = io.StringIO()
                csv.writer(out).writerows([header, *kept])
                atomic_write_text(self.path, out.getvalue())
        elif not append and self.path.exists():
            self.path.unlink()

    def _earlier_rows(self) -> tuple[str, list[list[str]]] | None:
        """The table an earlier process wrote (its text and rows), or None where it cannot be read
        as one (re-saved by a spreadsheet in another encoding or with other separators): then it
        is moved aside, with a warning naming both files, and a new table starts."""
        try:
            # (utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark)
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                text = fh.read()
            rows = list(csv.reader(io.StringIO(text)))
            if not rows or rows[0][:1] == ["Steps"]:
                return text, rows
            problem = f"its first column is {(rows[0] or [''])[0][:40]!r}, not Steps"
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        except csv.Error as e:
            problem = f"it is not a CSV table ({e})"
        aside = self.path.with_name(f"{self.path.stem}.unreadable.csv")
        number = 0
        while aside.exists():
            number += 1
            aside = self.path.with_name(f"{self.path.stem}.unreadable-{number}.csv")
        with _saving(f"the summary {self.path}"):
            os.replace(self.path, aside)
        logger.warning("the summary table %s cannot be continued (%s): it was moved to %s and a new table starts",
                       self.path, problem, aside)
        return None

    def write(self, category: str, step: int, values: dict[str, StatSummary]) -> None:
        self.pending.append((step, values))
        try:
            self._write_pending()
        except PermissionError as e:  # locked by another program: the run goes on, the rows wait
            if len(self.pending) == 1:
                logger.warning("could not write the summary %s (%s: is it open in another program?); its rows are "
                               "kept and written once it can be (TensorBoard has them too)", self.path, os_reason(e))

    def _write_pending(self) -> None:
        """Write the rows waiting; PermissionError where the file is locked, SaveError for any
        other failure (a full disk)."""
        keys = set().union(*(values for _, values in self.pending))
        with _saving(f"the summary {self.path}", but=PermissionError):
            if not self.path.exists() or not keys <= set(self.keys):
                self._widen(sorted(set(self.keys) | keys))
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([step, *[values[k].mean if k in values else "" for k in self.keys]]
                                         for step, values in self.pending)
        if len(self.pending) > 1:
            logger.info("wrote the summary %s again (%d rows that had waited)", self.path, len(self.pending) - 1)
        self.pending.clear()

    def _widen(self, keys: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8-sig") as fh:  # (as _earlier_rows reads it)
                rows = list(csv.DictReader(fh))
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["Steps", *keys])
        for row in rows:
            writer.writerow([row.get("Steps", ""), *[row.get(k) or "" for k in keys]])
        os.makedirs(self.path.parent, exist_ok=True)
        atomic_write_text(self.path, text.getvalue())
        self.keys = keys

    def close(self) -> None:
        if not self.pending:
            return
        try:
            self._write_pending()
        except PermissionError as e:
            logger.warning("the summary %s could not be written (%s): its last %d rows are only in TensorBoard",
                           self.path, os_reason(e), len(self.pending))


@contextlib.contextmanager
def _saving(what: str, but: type[OSError] | None = None) -> Iterator[None]:
    """OSError while writing ``what`` (a full disk) → SaveError naming it; ``but`` passes through."""
    try:
        yield
    except OSError as e:
        if but is not None and isinstance(e, but):
            raise
        raise SaveError(f"could not write {what}: {os_reason(e)}") from None


def _quiet_writer_thread_errors() -> None:
    """TensorBoard writes from a thread of its own, which prints a traceback when the disk is
    full before the next write in this thread raises the same error (named, above): that thread's
    OSError is left to that report."""
    import threading

    if getattr(threading.excepthook, "palaestra", False):
        return
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, OSError) and type(args.thread).__module__.startswith("tensorboard"):
            logger.debug("TensorBoard's writer thread: %s", args.exc_value)
            return
        default(args)

    hook.palaestra = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _step(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.inf  # not a step: a damaged row, dropped


class GaugeWriter:
    """Feeds each stat's mean into the timers' gauges (``<category>.<Stat>.mean``)."""

    def write(self, category: str, step: int, values: dict[str, StatSummary]) -> None:
        for key, s in values.items():
            # spaces left out of the whole name (a run-id or behavior with one too), as ML-Agents' sanitize_string
            TIMERS.set_gauge(f"{category}.{key.replace('/', '.')}.mean".replace(" ", ""), s.mean)

    def close(self) -> None:
        pass


class MetricsCSV:
    """With --debug: the seed's per-update metrics (ML-Agents' TrainerMetrics columns)."""

    HEADER = ["Brain name", "Time to update policy", "Time since start of training",
              "Time for last experience collection", "Number of experiences used for training", "Mean return"]

    def __init__(self, summaries_dir: Path, category: str, append: bool = False) -> None:
        """``append`` (--resume): keep the rows already there; otherwise start the file anew."""
        self.path = summaries_dir / self.file_name(category)
        if not (append and self.path.exists()):
            with _saving(f"the metrics {self.path}"):
                os.makedirs(summaries_dir, exist_ok=True)
                with open(self.path, "w", newline="") as fh:
                    csv.writer(fh).writerow(self.HEADER)

    @staticmethod
    def file_name(category: str) -> str:
        return f"{category}_metrics.csv"

    @classmethod
    def discard(cls, summaries_dir: Path, category: str) -> None:
        """Delete an earlier run's file (a run started over without --debug)."""
        path = summaries_dir / cls.file_name(category)
        with _saving(f"the metrics {path}"):
            path.unlink(missing_ok=True)

    def add_row(self, behavior: str, update_time: float, since_start: float, collection_time: float,
                experiences: int, mean_return: float | None) -> None:
        with _saving(f"the metrics {self.path}"), open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([behavior, f"{update_time:.4f}", f"{since_start:.4f}",
                                     f"{collection_time:.4f}", experiences,
                                     "" if mean_return is None else f"{mean_return:.4f}"])
