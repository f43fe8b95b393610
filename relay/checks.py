"""What check-config finds beyond validation: templates that fail, and warnings.

`relay check-config` prints both and `relay serve` refuses to start on a template
problem; these are plain functions over a validated `Config`, so the coming admin
page can show the same findings.
"""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path

from relay.config import Config
from relay.durations import duration_text
from relay.hotmart import SETTLING_EVENTS
from relay.render import default_templates_dir
from relay.targets import TemplateSet


def template_problems(config: Config) -> list[str]:
    """Compile and trial-render every template set the config uses; empty when all work."""
    return TemplateSet(config).check()


def config_warnings(config: Config) -> list[tuple[str, str]]:
    """What is valid but almost certainly not meant; check-config prints it, serve logs it.

    These are warnings, not errors, because `serve` refuses to start on an error, and
    neither costs anyone else a delivery: the slips of an affiliate with nowhere to
    send are recorded as skipped, and a stray template file leaves the default in use.
    """
    known = _files_under(default_templates_dir())
    found = _recovery_warnings(config)
    for p_index, producer in enumerate(config.producers):
        for a_index, affiliate in enumerate(producer.affiliates):
            if affiliate.buyer_data and not affiliate.destinations:
                found.append(
                    (
                        f"producers.{p_index}.affiliates.{a_index}",
                        f"affiliate {affiliate.code} has buyer_data = true but no destinations:"
                        " its slips are recorded as skipped and never sent",
                    )
                )
        if producer.templates_dir is None:
            continue
        folder = config.resolve_path(producer.templates_dir)
        for name in sorted(_files_under(folder) - known if folder.is_dir() else set()):
            hint = get_close_matches(name, known, n=1)
            found.append(
                (
                    f"producers.{p_index}.templates_dir",
                    f"{name} matches no template name and is never used"
                    + (f" (did you mean {hint[0]}?)" if hint else ""),
                )
            )
    return found


def _files_under(folder: Path) -> set[str]:
    """Template names as the loader sees them: paths relative to `folder`, hidden ones left out."""
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    }


def recovery_notes(config: Config) -> list[str]:
    """What an operator must know when sale recovery is on; check-config prints it."""
    recovery = config.recovery
    if recovery is None or not recovery.enabled:
        return []
    events = sorted(SETTLING_EVENTS)
    notes = [
        "sale recovery is on: in Hotmart's webhook settings, send "
        f"{', '.join(events[:-1])} and {events[-1]} to this relay too, whether or not any "
        "affiliate subscribes to them: they cancel reminders and bring the paid and "
        "expired notices"
    ]
    if not recovery.slip_validity_s:
        notes.append(
            "recovery.slip_validity names no payment type: only Pix codes, which carry "
            "their own expiry, get reminders"
        )
    return notes


def _recovery_warnings(config: Config) -> list[tuple[str, str]]:
    recovery = config.recovery
    if recovery is None:
        return []
    return [
        (
            f"recovery.slip_validity.{kind}",
            f"{duration_text(validity_s)} is not longer than recovery.remind_before "
            f"({duration_text(recovery.remind_before_s)}): no {kind} slip ever gets a reminder",
        )
        for kind, validity_s in sorted(recovery.slip_validity_s.items())
        if validity_s <= recovery.remind_before_s
    ]
