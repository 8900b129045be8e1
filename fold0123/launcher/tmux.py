"""Lay a fold0123 plan out in tmux with libtmux: one window of rows × 3 panes, plus the waiter's window.

The panes get the plan's shell lines typed into an interactive shell (as tmuxinator does), so a pane whose
command fails keeps its shell open under the error. The `tiled` layout puts 12 panes in 4 rows of 3 in the
order given: train │ loss │ eval per split. The last window runs `launcher.status wait`, which titles the pane
borders, prints each row as it finishes and the elapsed minutes, and kills the session once every run is DONE.
"""
from __future__ import annotations

import os
import shlex
import subprocess

import libtmux

from fold0123.common.poll import wait_until
from fold0123.launcher.layout import SHELLS, LaunchError, Plan
from fold0123.launcher.status import clear_failures

WINDOW = "fold0123"
WAITER_WINDOW = "done"


def tmux_server(socket_name: str | None = None) -> libtmux.Server:
    """The default tmux server, or a private one (`tmux -L socket_name`), as tests use."""
    return libtmux.Server(socket_name=socket_name) if socket_name else libtmux.Server()


def session_is_busy(session: libtmux.Session) -> bool:
    """True while the session's waiter still waits (its rows are running); for a session without one, while
    any pane runs something other than its shell. Evaluators still exiting after the waiter has finished do
    not count, so a relaunch right after a failed one is not refused for a race."""
    waiters = [w for w in session.windows if w.window_name == WAITER_WINDOW]
    return any((pane.pane_current_command or "") not in SHELLS
               for window in waiters or session.windows for pane in window.panes)


def wait_closed(server: libtmux.Server, name: str, timeout_s: float) -> bool:
    """After success the waiter closes the session (after its linger); wait for that, so callers see it gone."""
    return wait_until(lambda: not session_alive(server, name), timeout_s, 0.2, f"tmux session {name} to close",
                      quiet=True)


def wait_idle(server: libtmux.Server, name: str, timeout_s: float) -> bool:
    """After a failure the waiter names the failed runs and exits, leaving the session open to read; wait for
    that, so a relaunch right away is not refused because the waiter had not noticed yet."""
    def idle() -> bool:
        try:
            return not session_is_busy(server.sessions.get(session_name=name))
        except Exception:  # the session (or the server) is gone: nothing left to wait for
            return True
    return wait_until(idle, timeout_s, 0.2, f"tmux session {name}'s waiter to finish", quiet=True)


def check_free(server: libtmux.Server, name: str) -> None:
    """Refuse to start over a running session; an idle leftover (failed rows left open to read) is replaced."""
    if not server.is_alive() or not server.has_session(name):
        return
    session = server.sessions.get(session_name=name)
    if session_is_busy(session):
        socket = f" -L {server.socket_name}" if server.socket_name else ""
        raise LaunchError(f"tmux session {name!r} already exists and is running: attach with "
                          f"`tmux{socket} attach -t {name}`, stop it with `tmux{socket} kill-session -t {name}`, "
                          "or pass --session NAME")
    last = len(server.sessions) == 1
    session.kill()
    if last:  # the server exits with its last session: a session started before it is gone would die with it
        # if it is still serving after that (another client's session appeared), starting ours on it is fine
        wait_until(lambda: not server.is_alive(), timeout=5, what="the emptied tmux server to exit", quiet=True)


def start_session(plan: Plan, server: libtmux.Server) -> libtmux.Session:
    """Create the detached session for the plan's rows and type each pane's command."""
    check_free(server, plan.session)
    clear_failures((plan.run_path(row.run_dir) for row in plan.rows), extend=plan.retrained())
    session = server.new_session(session_name=plan.session, start_directory=plan.root, window_name=WINDOW,
                                 attach=False, x=240, y=64)
    window = session.active_window
    panes = [window.active_pane]
    for _ in plan.panes[1:]:
        panes.append(panes[-1].split(start_directory=plan.root))  # after the last: pane index = plan order
        window.select_layout("tiled")  # keep room for the next split
    window.select_layout("tiled")
    for pane, spec in zip(panes, plan.panes):
        pane.set_title(spec.title)
        pane.send_keys(spec.command, enter=True)
    waiter = session.new_window(window_name=WAITER_WINDOW, start_directory=plan.root, attach=False)
    waiter.active_pane.set_title("fold0123 waiter")
    waiter.active_pane.send_keys(shlex.join(plan.waiter_argv), enter=True)
    window.select()
    panes[0].select()
    return session


def attach(server: libtmux.Server, name: str) -> None:
    """Attach the current terminal (or switch the client when already inside tmux)."""
    command = ["tmux"] + (["-L", server.socket_name] if server.socket_name else [])
    verb = ["switch-client", "-t", name] if os.environ.get("TMUX") else ["attach-session", "-t", name]
    subprocess.run(command + verb, check=False)


def session_alive(server: libtmux.Server, name: str) -> bool:
    try:
        return server.is_alive() and server.has_session(name)
    except Exception:  # the server went away between the two calls
        return False
