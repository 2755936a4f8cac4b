"""Job kinds: what a job can run, one registry entry per `python -m extraction <verb>`.

A `JobKind` names everything the registry, the worker and the process checks need to know about
one kind of job, so none of them branches on a kind's name:

* `settings`: its settings record, a frozen dataclass that validates in its constructor and has
  `to_dict()`, a strict `from_dict(data)` (unknown or missing keys are ValueError; see
  `settings.records`) and `argv()`, the command-line options that ask for exactly it;
* `verb`: the extraction sub-command, run as `python -P -m extraction <verb> <argv()>
  --store=ROOT <output_flag>=<output id> <fixed_args>`;
* the output: its id is `<output_base(settings)>-<UTC stamp>-<6 hex>` (`settings.run.new_run_id`,
  so it is safe as one folder name and shares its tail with the job id: `jobs.paths`);
  `is_committed(root, id)` says it is complete, `remove_partial(root, id)` deletes what a killed
  or failed job left, `progress(root, id)` is (done, total) or (None, None);
* `prepare(root, settings)`: the check of the job's inputs against this store, run by `launch`
  and again by the worker before it starts anything; it returns the settings the command is
  built from (a dataset name resolved to its file) or raises JobError. A kind without inputs
  keeps the default, which returns the settings unchanged; `resolve_dataset_input` and
  `committed_run_input` are the checks for a dataset and for a run of this store;
* `describe(settings, output_id)`: the short values a job card shows.

`KINDS` is keyed by the name stored in each job record (`kind`); `kind_named` reads it strictly
and `kind_of` finds the kind of a settings record (each settings class belongs to one kind).
Standard library, store and settings only: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jobs.errors import JobError
from jobs.uploads import resolve_dataset, upload_label
from settings.run import RunSettings, validate_run_id
from settings.vectors import VectorSettings
from store import StoreError, open_store
from store.vectorsets import is_committed_vector_set, remove_partial_vector_set
from store.writer import is_committed_run, read_progress, remove_partial_run

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def _no_progress(_root: Path, _output_id: str) -> tuple[int | None, int | None]:
    return None, None


def _unchanged(_root: Path, settings: Any) -> Any:
    return settings


def _output_only(_settings: Any, output_id: str) -> tuple[str, ...]:
    return (output_id,)


@dataclass(frozen=True)
class JobKind:
    """One kind of job. Constructing it checks the shape of the entry (ValueError), no I/O."""

    name: str  # stored in each job record
    settings: type  # the settings record class (to_dict / from_dict / argv)
    verb: str  # `python -m extraction <verb>`
    output_flag: str  # the verb's option that receives the output id, e.g. `--run-id`
    output_base: Callable[[Any], str]  # settings -> the start of a new output id
    is_committed: Callable[[Path, str], bool]
    remove_partial: Callable[[Path, str], object]
    prepare: Callable[[Path, Any], Any] = _unchanged
    progress: Callable[[Path, str], tuple[int | None, int | None]] = _no_progress
    describe: Callable[[Any, str], tuple[str, ...]] = _output_only
    fixed_args: tuple[str, ...] = ()  # appended to every command, e.g. `--no-progress`

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"job kind name {self.name!r:.40} must match {_NAME.pattern}")
        if not isinstance(self.verb, str) or not _NAME.match(self.verb):
            raise ValueError(f"verb {self.verb!r:.40} of job kind {self.name} is not a verb")
        if not isinstance(self.output_flag, str) or not re.match(r"^--[a-z][a-z-]*$",
                                                                   self.output_flag):  # fmt: skip
            raise ValueError(f"output flag {self.output_flag!r:.40} is not an option name")
        for method in ("to_dict", "from_dict", "argv"):
            if not callable(getattr(self.settings, method, None)):
                raise ValueError(f"settings of job kind {self.name} have no {method}()")

    def command_args(self, settings: Any, root: Path, output_id: str) -> tuple[str, ...]:
        """Everything after `python -P -m extraction`: the verb, the settings' options, the
        store and the output id, each option as `--opt=value` (a value starting with '-' is
        never read as an option)."""
        return (
            self.verb, *settings.argv(), f"--store={root}",
            f"{self.output_flag}={output_id}", *self.fixed_args,
        )  # fmt: skip


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add `kind` to KINDS; a name or settings class that is taken already is a ValueError."""
    if kind.name in KINDS:
        raise ValueError(f"job kind {kind.name!r} is registered already")
    if any(other.settings is kind.settings for other in KINDS.values()):
        raise ValueError(f"{kind.settings.__name__} belongs to another job kind already")
    KINDS[kind.name] = kind
    return kind


def kind_named(name: object) -> JobKind:
    """The kind stored in a record as `name`; ValueError naming it if there is none."""
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"unknown job kind {name!r:.40}; known: {', '.join(KINDS)}")
    return kind


def kind_of(settings: object) -> JobKind:
    """The kind whose settings class `settings` is an instance of; JobError if none."""
    for kind in KINDS.values():
        if type(settings) is kind.settings:
            return kind
    raise JobError(f"{type(settings).__name__} are not the settings of a job kind "
                   f"({', '.join(KINDS)})")  # fmt: skip


# -- input checks kinds share --------------------------------------------------------------------
def resolve_dataset_input(root: Path, settings: Any) -> Any:
    """`settings` with its `dataset` (a built-in name or a file of this store's uploads)
    replaced by that file's resolved path; JobError for anything else (jobs.uploads)."""
    return replace(settings, dataset=str(resolve_dataset(root, settings.dataset)))


def committed_run_input(root: Path, run_id: object) -> str:
    """`run_id` if it names a healthy committed run of this store, else JobError: for kinds
    that read a run (control vectors, SAE training)."""
    try:
        validate_run_id(run_id)
        open_store(root).manifest(run_id)  # type: ignore[arg-type]
    except (ValueError, StoreError) as exc:
        raise JobError(f"input run {str(run_id)[:80]!r} is not a committed run of this store: "
                       f"{exc}") from None  # fmt: skip
    return run_id  # type: ignore[return-value]


# -- the kinds -----------------------------------------------------------------------------------
def _run_base(settings: RunSettings) -> str:
    if settings.name:
        return settings.name
    dataset = Path(settings.dataset)
    stem = dataset.stem.split("-", 1)[-1] if dataset.suffix else settings.dataset
    return f"{stem}-{Path(settings.model.rstrip('/')).name}"


def _describe_run(settings: RunSettings, output_id: str) -> tuple[str, ...]:
    path = Path(settings.dataset)
    dataset = upload_label(path) if path.suffix else settings.dataset
    return (settings.name or output_id, settings.model, dataset)


RUN = register(
    JobKind(
        name="run",
        settings=RunSettings,
        verb="run",
        output_flag="--run-id",
        output_base=_run_base,
        is_committed=is_committed_run,
        remove_partial=remove_partial_run,
        prepare=resolve_dataset_input,
        progress=read_progress,
        describe=_describe_run,
        fixed_args=("--no-progress",),
    )
)


def _paired_run_input(root: Path, settings: VectorSettings) -> VectorSettings:
    """The settings with `run` (an id or unique prefix) made the committed run's full id."""
    try:
        run_id = open_store(root).resolve_run_id(settings.run)
    except StoreError as exc:
        raise JobError(f"input run {settings.run[:80]!r}: {exc}") from None
    return replace(settings, run=committed_run_input(root, run_id))


def _describe_vectors(settings: VectorSettings, output_id: str) -> tuple[str, ...]:
    return (settings.name or output_id, settings.run, settings.method, settings.hook)


VECTORS = register(
    JobKind(
        name="vectors",
        settings=VectorSettings,
        verb="vectors",
        output_flag="--set-id",
        output_base=lambda s: s.name or f"{s.method}-{s.run}",
        is_committed=is_committed_vector_set,
        remove_partial=remove_partial_vector_set,
        prepare=_paired_run_input,
        describe=_describe_vectors,
    )
)
