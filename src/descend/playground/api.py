"""The playground's JSON API, apart from HTTP: validate a request, call the library.

Every handler takes the decoded JSON body (a dict) and returns a JSON-able dict, or
raises :class:`ApiError` with an HTTP status and a message in the project's shape
("`lr` must be >= 0. Received: lr=-1"), prefixed with where in the request the value
was (``optimizers[1] (adam): ...``). Numbers may be sent as JSON numbers or as the text
typed in a field (``"1e-3"``, ``"nan"``, ``"0.9, 0.999"``); text is read by
:func:`parse_value`, never evaluated.
"""

from __future__ import annotations

from typing import Any

from descend._validation import check_bool, check_choice, check_int, check_no_unknown, check_range, fail
from descend.playground import library, race
from descend.playground.sessions import SessionStore, UnknownSession
from descend.playground.trainer import TrainerRun

MAX_RACE_STEPS = 2000
MAX_RACERS = 8
MAX_STEPS_PER_REQUEST = 500
MAX_TOTAL_STEPS = 100_000
MAX_LAYERS = 6
MAX_WIDTH = 64
EXPRESSION_BOUNDS = (-3.0, 3.0, -3.0, 3.0)


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(where: str, e: Exception) -> ApiError:
    return ApiError(400, f"{where}: {e}" if where else str(e))


def parse_value(text: Any) -> Any:
    """Read a typed field: bool, int, float (``nan``/``inf`` included), a list of numbers
    (``"0.9, 0.999"``), ``None`` (blank or ``null``) or else the text itself.
    JSON values pass through unchanged.

    >>> parse_value("1e-3"), parse_value("0.9, 0.999"), parse_value("true")
    (0.001, [0.9, 0.999], True)
    """
    if not isinstance(text, str):
        return text
    s = text.strip()
    if s.lower() in ("", "null"):
        return None
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    inner = s.strip("()[]")
    if "," in inner:
        parts = [p.strip() for p in inner.split(",") if p.strip()]
        try:
            return [float(p) for p in parts]
        except ValueError:
            pass
    return s


def _hyper(where: str, hyper: Any) -> dict[str, Any]:
    if not isinstance(hyper, dict):
        raise _bad(where, TypeError(f"`hyper` must be an object. Received: hyper={hyper!r}"))
    return {str(k): parse_value(v) for k, v in hyper.items()}


def _number(name: str, value: Any, **bounds) -> float:
    value = parse_value(value)
    check_range(name, value, **bounds)
    return float(value)


def _integer(name: str, value: Any, **bounds) -> int:
    value = parse_value(value)
    check_int(name, value, **bounds)
    return int(value)


# ------------------------------------------------------------------ options, surfaces

def options() -> dict[str, Any]:
    """What the page offers: optimizers, schedules, surfaces, datasets, limits."""
    surfaces = [{"name": s.name, "formula": s.formula, "bounds": list(s.bounds),
                 "start": list(s.start), "minima": [list(m) for m in s.minima]}
                for s in library.surfaces().values()]
    return {
        "optimizers": library.optimizer_specs(),
        "schedules": library.schedule_specs(),
        "surfaces": surfaces,
        "expression_bounds": list(EXPRESSION_BOUNDS),
        "datasets": library.dataset_names(),
        "max_classes": {k: library.max_classes(k) for k in library.dataset_names()},
        "activations": list(library.ACTIVATIONS),
        "norms": list(library.NORMS),
        "inits": library.init_schemes(),
        "limits": {"race_steps": MAX_RACE_STEPS, "racers": MAX_RACERS,
                   "steps_per_request": MAX_STEPS_PER_REQUEST, "layers": MAX_LAYERS,
                   "width": MAX_WIDTH},
        "backends": library.backends(),
    }


def _resolve_surface(body: dict[str, Any]):
    """(fn, bounds, start, minima, name) from ``surface`` / ``expression`` / ``bounds``."""
    names = sorted(library.surfaces()) + ["expression"]
    name = body.get("surface", "quadratic")
    try:
        check_choice("surface", name, names)
        if name == "expression":
            fn = library.parse_expression(body.get("expression"))
            bounds, start, minima = EXPRESSION_BOUNDS, (-2.0, 2.0), ()
        else:
            s = library.surfaces()[name]
            fn, bounds, start, minima = s.fn, s.bounds, s.start, s.minima
        if body.get("bounds") is not None:
            b = body["bounds"]
            if not isinstance(b, list) or len(b) != 4:
                fail("bounds", "a list [xmin, xmax, ymin, ymax]", b, TypeError)
            b = [_number(f"bounds[{i}]", v, ge=-1e4, le=1e4) for i, v in enumerate(b)]
            if not (b[0] < b[1] and b[2] < b[3]):
                fail("bounds", "a box with xmin < xmax and ymin < ymax", b)
            bounds = tuple(b)
    except (ValueError, TypeError) as e:
        raise _bad("", e) from e
    return fn, bounds, start, minima, name


def surface(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/surface``: the surface on a grid and its contour lines."""
    try:
        check_no_unknown("surface request", {k: v for k, v in body.items()
                                             if k not in ("surface", "expression", "bounds", "grid")})
        n = _integer("grid", body.get("grid", 90), ge=10, le=200)
    except (ValueError, TypeError) as e:
        raise _bad("", e) from e
    fn, bounds, start, minima, name = _resolve_surface(body)
    try:
        g = race.grid(fn, bounds, n)
    except ValueError as e:
        raise _bad("", e) from e
    g.update({"surface": name, "start": list(start), "minima": [list(m) for m in minima]})
    return g


def race_request(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/race``: run each optimizer from the same start; return the paths."""
    allowed = ("surface", "expression", "bounds", "start", "steps", "optimizers")
    try:
        check_no_unknown("race request", {k: v for k, v in body.items() if k not in allowed})
        steps = _integer("steps", body.get("steps", 200), ge=1, le=MAX_RACE_STEPS)
    except (ValueError, TypeError) as e:
        raise _bad("", e) from e
    fn, bounds, start, minima, name = _resolve_surface(body)
    try:
        if body.get("start") is not None:
            st = body["start"]
            if not isinstance(st, list) or len(st) != 2:
                fail("start", "a point [x, y]", st, TypeError)
            start = tuple(_number(f"start[{i}]", v, ge=-1e4, le=1e4) for i, v in enumerate(st))
        racers = body.get("optimizers")
        if not isinstance(racers, list) or not 1 <= len(racers) <= MAX_RACERS:
            fail("optimizers", f"a list of 1 to {MAX_RACERS} optimizers", racers, TypeError)
    except (ValueError, TypeError) as e:
        raise _bad("", e) from e
    runs = []
    for i, r in enumerate(racers):
        where = f"optimizers[{i}]"
        try:
            if not isinstance(r, dict):
                fail(where, "an object {name, hyper, schedule}", r, TypeError)
            check_no_unknown(where, {k: v for k, v in r.items()
                                     if k not in ("name", "hyper", "schedule")})
            where = f"optimizers[{i}] ({r.get('name')})"
            sch = r.get("schedule") or {"name": "none"}
            if not isinstance(sch, dict):
                fail("schedule", "an object {name, hyper}", sch, TypeError)
            runs.append(race.run(fn, start, minima, r.get("name"), _hyper(where, r.get("hyper", {})),
                                 steps, sch.get("name", "none"),
                                 _hyper(where, sch.get("hyper", {}))))
        except (ValueError, TypeError) as e:
            raise _bad(where, e) from e
    return {"surface": name, "start": list(start), "minima": [list(m) for m in minima],
            "steps": steps, "runs": runs}


# ------------------------------------------------------------------ network trainer

TRAINER_DEFAULTS: dict[str, Any] = {
    "dataset": "circles", "classes": 2, "n": 200, "noise": 0.1, "test_fraction": 0.5,
    "seed": 0, "hidden": [8, 8], "activation": "tanh", "init": "xavier_uniform",
    "norm": "none", "residual": False, "dropout": 0.0, "l1": 0.0, "l2": 0.0, "optimizer": "sgd", "hyper": {"lr": 0.1},
    "batch_size": 16, "grid": 50,
}


def trainer_config(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a trainer request against :data:`TRAINER_DEFAULTS`; return the config."""
    check_no_unknown("trainer request", {k: v for k, v in body.items()
                                         if k not in TRAINER_DEFAULTS})
    c = {**TRAINER_DEFAULTS, **body}
    check_choice("dataset", c["dataset"], library.dataset_names())
    c["classes"] = _integer("classes", c["classes"], ge=2, le=library.max_classes(c["dataset"]))
    c["n"] = _integer("n", c["n"], ge=10, le=5000)
    c["noise"] = _number("noise", c["noise"], ge=0, le=1)
    c["test_fraction"] = _number("test_fraction", c["test_fraction"], ge=0.1, le=0.9)
    c["seed"] = _integer("seed", c["seed"], ge=0, le=2**31 - 1)
    hidden = parse_value(c["hidden"])
    hidden = [hidden] if isinstance(hidden, (int, float)) and not isinstance(hidden, bool) else hidden
    if hidden == "" or hidden == []:
        hidden = []
    if not isinstance(hidden, list) or len(hidden) > MAX_LAYERS:
        fail("hidden", f"a list of at most {MAX_LAYERS} layer widths", c["hidden"], TypeError)
    c["hidden"] = [_integer(f"hidden[{i}]", int(h) if isinstance(h, float) and h.is_integer() else h,
                            ge=1, le=MAX_WIDTH) for i, h in enumerate(hidden)]
    check_choice("activation", c["activation"], list(library.ACTIVATIONS))
    check_choice("init", c["init"], library.init_schemes())
    check_choice("norm", c["norm"], list(library.NORMS))
    c["residual"] = parse_value(c["residual"])
    check_bool("residual", c["residual"])
    c["dropout"] = _number("dropout", c["dropout"], ge=0, lt=1)
    c["l1"] = _number("l1", c["l1"], ge=0, le=10)
    c["l2"] = _number("l2", c["l2"], ge=0, le=10)
    check_choice("optimizer", c["optimizer"], sorted(library.optimizer_factories()))
    if not isinstance(c["hyper"], dict):
        fail("hyper", "an object of hyperparameters", c["hyper"], TypeError)
    c["hyper"] = {str(k): parse_value(v) for k, v in c["hyper"].items()}
    c["batch_size"] = _integer("batch_size", c["batch_size"], ge=1, le=5000)
    c["grid"] = _integer("grid", c["grid"], ge=5, le=100)
    return c


class Api:
    """The trainer endpoints over a :class:`SessionStore` (one per server)."""

    def __init__(self, max_sessions: int = 16):
        self.store = SessionStore(max_sessions)

    def _run(self, config):
        try:
            return TrainerRun(config)
        except (ValueError, TypeError) as e:  # model, init or optimizer refused the settings
            raise _bad("", e) from e

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/trainer``: validate, build data + model + optimizer, return id."""
        try:
            config = trainer_config(body)
        except (ValueError, TypeError) as e:
            raise _bad("", e) from e
        sid = self.store.create(lambda: self._run(config))
        with self.store.use(sid) as s:
            return {"session": sid, "config": config, "data": s.run.data(), **s.run.state()}

    def _session(self, sid: str):
        try:
            return self.store.use(sid)
        except UnknownSession:
            raise ApiError(404, f"`session` must be a live run id (it may have been closed "
                                f"to make room for newer ones). Received: session={sid!r}") from None

    @staticmethod
    def _since(state: dict[str, Any], since: Any) -> dict[str, Any]:
        since = _integer("since", since, ge=0)
        hist = state["history"]
        state["history_from"] = min(since, len(hist))
        state["history"] = hist[since:]
        return state

    def step(self, sid: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/trainer/<id>/step``: ``n`` more steps (1..500)."""
        try:
            check_no_unknown("step request", {k: v for k, v in body.items()
                                              if k not in ("n", "since")})
            n = _integer("n", body.get("n", 1), ge=1, le=MAX_STEPS_PER_REQUEST)
            since = body.get("since", 0)
        except (ValueError, TypeError) as e:
            raise _bad("", e) from e
        with self._session(sid) as s:
            if s.run.steps + n > MAX_TOTAL_STEPS:
                raise ApiError(400, f"`n` must keep the run within {MAX_TOTAL_STEPS} steps; "
                                    f"reset it. Received: n={n}")
            try:
                return self._since(s.run.step(n), since)
            except (ValueError, TypeError) as e:
                raise _bad("", e) from e

    def state(self, sid: str, since: Any = 0) -> dict[str, Any]:
        """``GET /api/trainer/<id>``: the current state."""
        with self._session(sid) as s:
            try:
                return self._since(s.run.state(), since)
            except (ValueError, TypeError) as e:
                raise _bad("", e) from e

    def reset(self, sid: str) -> dict[str, Any]:
        """``POST /api/trainer/<id>/reset``: rebuild the run from its config (step 0)."""
        with self._session(sid) as s:
            s.run = self._run(s.run.config)
            return {"session": sid, "config": s.run.config, "data": s.run.data(),
                    **s.run.state()}

    def delete(self, sid: str) -> dict[str, Any]:
        try:
            self.store.delete(sid)
        except UnknownSession:
            raise ApiError(404, f"`session` must be a live run id. Received: session={sid!r}") from None
        return {"deleted": sid}


__all__ = ["Api", "ApiError", "options", "surface", "race_request", "trainer_config",
           "parse_value"]
