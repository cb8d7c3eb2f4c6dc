"""SGLang plugin entry point (group ``sglang.srt.plugins``), run once in every SGLang process.

It must never raise into SGLang and must not read SGLang's configuration (published only
after plugins load): it reads our own environment variables, sets up this process's
telemetry, and registers the hooks. SGLang applies them right after.
"""

from __future__ import annotations

import logging
import os

from lora_telemetry import config as config_module
from lora_telemetry.version import __version__

logger = logging.getLogger("lora_telemetry")
PROCESS_REPORT_ENV = "LORA_TELEMETRY_PROCESS_REPORT"


def _report_process() -> None:
    """Append this process's pid to a file, so tests can see which processes ran the plugin."""
    path = os.environ.get(PROCESS_REPORT_ENV)
    if not path:
        return
    line = f"{os.getpid()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def activate() -> None:
    """Entry point. Sets up telemetry and registers hooks; reports problems, never raises."""
    try:
        cfg = config_module.get()
    except config_module.ConfigError as error:
        import multiprocessing

        if multiprocessing.parent_process() is None:  # said once, by the process SGLang was started as
            logger.error("lora_telemetry is off: %s", error)
        return
    if not cfg.enabled:
        return
    try:
        from lora_telemetry import events as ev
        from lora_telemetry import hooks, runtime

        try:
            telemetry = runtime.get()
        except OSError as error:  # e.g. no writable place for the run's state directory
            logger.warning("lora_telemetry is off: cannot set up its state directory: %s", error)
            return
        active = hooks.install()
        if telemetry.is_main:
            _warn_if_untested()
            if cfg.metrics_port is not None:
                _start_exporter(cfg.metrics_port)
            telemetry.emit(ev.TelemetryStarted(__version__, _sglang_version(), active))
        _report_process()
    except Exception:
        logger.exception("lora_telemetry could not start; SGLang runs without it")


def _warn_if_untested() -> None:
    from lora_telemetry import compat

    found = compat.sglang_version()
    if found is not None and not compat.supported(found):
        logger.warning("lora_telemetry: sglang %s is outside the tested range %s; hooks whose targets exist "
                       "attach, `lora-telemetry doctor` lists the others", found, compat.SUPPORTED)


def _start_exporter(port: int) -> None:
    """For an in-process ``sglang.Engine`` (its process is the one that loads us first)."""
    from lora_telemetry import exporter

    try:
        exporter.start(port)
    except OSError as error:
        logger.error("lora_telemetry: cannot serve /metrics on LORA_TELEMETRY_METRICS_PORT=%s: %s", port, error)


def _sglang_version() -> str:
    from lora_telemetry import compat

    return compat.sglang_version() or "unknown"
