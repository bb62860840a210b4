"""Sessions of the explorer: one sheet per model per browser, bounded in number, expiring when idle.

Each browser session owns its sheets, so two users' edits never mix; each session has one
lock, held for the whole of a request, so a sheet is touched by one request at a time. The
store keeps at most `max_sessions` sessions (the least recently used goes first) and drops
a session idle for `idle_seconds`, so memory stays bounded whatever the traffic. A request
without a known session works in a new one that the store keeps only once the request has
succeeded (`open`, then `keep`): a bad request never makes a session, nor pushes one out.

>>> import dfgpt
>>> store = SessionStore({"sort": dfgpt.load("sort-random")}, max_sessions=2)
>>> pending = store.open(None)
>>> len(store), pending.sid in store
(0, False)
>>> a, b, c = (store.get(None) for _ in range(3))
>>> len(store), store.get(a.sid) is a, store.get(c.sid) is c
(2, False, True)
>>> a.sheet("sort", "CABACA").text
'CABACA'
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from ..errors import QueryError, TokenError, UnknownNameError, suggest
from ..model import Model
from ..sheet import Sheet

__all__ = ["MAX_TEXT", "Session", "SessionStore", "encode"]

MAX_TEXT = 4096  # characters of input a request may carry (the model's context is checked after)


def encode(model: Model, text: str) -> list[int]:
    """An input's token ids: by the model's tokenizer, or, for a checkpoint without one, ids separated by spaces.

    >>> import dfgpt
    >>> encode(dfgpt.load("sort-random"), "CAB")
    [2, 0, 1]
    """
    if not isinstance(text, str) or not text:
        raise QueryError("text: give the input as a non-empty text, e.g. text=CABACA.")
    if len(text) > MAX_TEXT:
        raise QueryError(f"text: {len(text):,} characters is too long; at most {MAX_TEXT:,} are accepted.")
    if model.vocab:
        return model.encode(text)
    parts = text.split()
    if not parts or not all(p.isdigit() and p.isascii() and len(p) < 10 for p in parts):
        raise TokenError(f"this model came without a tokenizer: give the input as token ids separated by spaces, "
                         f"e.g. text=464 2068 7586, not {text[:40]!r}.")
    return model.encode([int(p) for p in parts])


class Session:
    """One browser's sheets (one per model) and the lock a request holds while it reads or edits them."""

    def __init__(self, sid: str, models: Mapping[str, Model], now: float) -> None:
        self.sid = sid
        self.models = models
        self.sheets: dict[str, Sheet] = {}
        self.history: dict[str, tuple[int, int]] = {}  # model -> (edits to undo, edits to redo)
        # model -> the sheet's edits of weights, activations and the temperature (cell -> value): the page's
        # address holds them, so another browser rebuilds the same sheet; tokens are in the text
        self.edits: dict[str, dict[str, float]] = {}
        self.undo_edits: dict[str, list[dict[str, float]]] = {}  # the edits before each undoable action
        self.redo_edits: dict[str, list[dict[str, float]]] = {}
        self.restored: dict[str, object] = {}  # model -> the receipt of the address's edits, made on a rebuild
        self.receipts: dict[str, dict[str, object]] = {}  # model -> the last action's answer (a reload shows it)
        self.answers: dict[tuple[object, ...], object] = {}  # costly answers by sheet state (bounded)
        self.lock = threading.Lock()
        self.last_used = now

    def model(self, name: str) -> Model:
        if not isinstance(name, str) or name not in self.models:
            raise UnknownNameError(
                f"no model {name!r} is served here; this server serves {', '.join(self.models)} "
                "(models are chosen when `dfgpt serve --model ...` starts)." + suggest(str(name), self.models)
            )
        return self.models[name]

    def sheet(self, name: str, text: str, edits: Mapping[str, float] | None = None) -> Sheet:
        """The session's sheet of a model in the state the page asks for; rebuilt when it is another.

        A request carries the input it was made for, and the page's edits (`edits`, None: the
        session's, whatever they are): the page sends the sheet's current state, so edits carry
        on; another text or other edits (a shared link, a new tab) open that state afresh, the
        edits applied as one undoable edit whose receipt is kept in `restored`.
        """
        model = self.model(name)
        sheet = self.sheets.get(name)
        if sheet is not None and sheet.text == text and (edits is None or dict(edits) == self.edits.get(name, {})):
            return sheet
        fresh = model.sheet(encode(model, text))
        receipt, changes = None, {}
        if edits:
            changes = {fresh.name(*fresh.cell(c)): v for c, v in edits.items()}
            tokens = [c for c in changes if c.startswith("tokens[")]
            if tokens:
                raise QueryError(f"edits: {tokens[0]} is a token: tokens are the input text, not an edit.")
            fresh.values("prob")  # the edits' receipt compares with the unedited outputs
            receipt = fresh.set_many(changes)
            receipt.settle()
        self.sheets[name] = fresh
        self.edits[name] = changes
        self.undo_edits[name], self.redo_edits[name] = ([{}] if edits else []), []
        self.history[name] = (1 if edits else 0, 0)
        self.restored[name] = receipt
        self.receipts.pop(name, None)
        self.answers.clear()  # keyed by the sheet's id, which a new sheet may reuse
        return fresh

    def record(self, name: str, edits: Mapping[str, float]) -> None:
        """An undoable action was done on the sheet: its edits are now `edits`; the redo stack is dropped."""
        self.undo_edits.setdefault(name, []).append(dict(self.edits.get(name, {})))
        self.redo_edits[name] = []
        self.edits[name] = dict(edits)
        self.restored.pop(name, None)

    def step_back(self, name: str, undo: bool) -> None:
        """The sheet's last action was undone (or redone): its edits move between the two stacks."""
        src, dst = (self.undo_edits, self.redo_edits) if undo else (self.redo_edits, self.undo_edits)
        if src.get(name):
            dst.setdefault(name, []).append(dict(self.edits.get(name, {})))
            self.edits[name] = src[name].pop()
        self.restored.pop(name, None)

    def replace(self, name: str, sheet: Sheet, edits: Mapping[str, float] | None = None) -> None:
        """A new sheet of this model with these edits (no history: undo does not cross sheets)."""
        self.sheets[name] = sheet
        self.edits[name] = dict(edits or {})
        self.undo_edits[name], self.redo_edits[name] = [], []
        self.history[name] = (0, 0)
        self.restored.pop(name, None)
        self.receipts.pop(name, None)
        self.answers.clear()


class SessionStore:
    """Sessions by id: at most `max_sessions`, each dropped after `idle_seconds` without a request."""

    def __init__(self, models: Mapping[str, Model], max_sessions: int = 32, idle_seconds: float = 1800.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (isinstance(max_sessions, int) and max_sessions >= 1 and isinstance(idle_seconds, (int, float))
                and math.isfinite(idle_seconds) and idle_seconds > 0):
            raise QueryError(f"a session store needs max_sessions >= 1 and a finite idle_seconds > 0, got "
                             f"{max_sessions!r} and {idle_seconds!r}.")
        self.models = models
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, sid: object) -> bool:
        with self._lock:
            return sid in self._sessions

    def get(self, sid: str | None) -> Session:
        """The session `sid`, or a new one (with a new id, kept at once) when it is unknown or expired."""
        return self.keep(self.open(sid))

    def open(self, sid: str | None) -> Session:
        """The session `sid` (now the most recently used), or a new one that the store does not keep yet.

        The explorer keeps a new session (`keep`) only after its request succeeded and its cookie
        went back: a failed request would otherwise leave a session no browser can name, and
        enough of them would push out the sessions users are editing.
        """
        now = self.clock()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(sid) if sid else None
            if session is None:
                return Session(secrets.token_urlsafe(18), self.models, now)
            session.last_used = now
            self._sessions.move_to_end(session.sid)
            return session

    def keep(self, session: Session) -> Session:
        """Keep a session opened here (the least recently used goes past `max_sessions`); kept ones are touched."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            if session.sid not in self._sessions:
                while len(self._sessions) >= self.max_sessions:
                    self._sessions.popitem(last=False)  # the least recently used
                self._sessions[session.sid] = session
            session.last_used = now
            self._sessions.move_to_end(session.sid)
            return session

    def _expire(self, now: float) -> None:
        for sid in [s for s, x in self._sessions.items() if now - x.last_used > self.idle_seconds]:
            del self._sessions[sid]
