"""`WebServing`: bert4keras 0.11.5's small HTTP JSON API around Python functions (e.g. a model's
`predict`), on bottle and waitress (imported when a `WebServing` is created; `pip install
"bert4keras[serving]"`). `bert4keras.snippets` re-exports it, its 0.11.5 import path.
"""

import inspect
import json
import queue
import socket
import sys
import threading
import time

import numpy as np


def _json_default(x):
    """NumPy values as JSON: arrays as (nested) lists, scalars as numbers."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError('Object of type %s is not JSON serializable' % type(x).__name__)


class WebServing:
    """A small HTTP JSON API around Python functions (e.g. a model's `predict`), with bert4keras's API.

    Each routed function answers GET requests (arguments in the query string) and/or POST
    requests (arguments as form fields or a JSON object body) with the JSON envelope
    `{"code": 0, "desc": "succeeded", "data": func(**kwargs)}`. Other codes:
    1 a bad request (`desc` is `lack of "text" argument` for a missing required argument, or
    `bad "n" argument ...` when a converter raised, or a malformed JSON body); 2 the function
    raised (`desc` is its message; the traceback is logged). Responses are HTTP 200 with
    `Content-Type: application/json`, as bert4keras's were 200 (clients read `code`). NumPy
    arrays and scalars in `data` are sent as lists and numbers.

    Built on bottle with an app of its own (`self.app`, a `bottle.Bottle`). The default
    server is waitress (multi-threaded); routed functions then run in its worker threads, one
    at a time with `serialize=True` (Keras models are not safe to call from several threads
    on every backend).

    Args:
        host: str, the interface to listen on ('0.0.0.0': all; '127.0.0.1': this machine).
        port: int; 0 lets the system choose a free port, read from `self.port` once
            started (with bottle's adapters: those that report it, as 'wsgiref').
        server: 'waitress' (the default); or any other name bottle knows
            (`bottle.server_names`: 'wsgiref', 'paste', 'cheroot', ..., installed
            separately) or a `bottle.ServerAdapter`, run by `bottle.run`. `stop()` works for
            'waitress' and 'wsgiref'; others stop with the process.
        serialize: bool, call the routed functions under one lock (one call at a time
            across all routes). False when they are thread-safe (e.g. they go through a `Batcher`).
        http_status: bool, False (bert4keras) answers every request with HTTP 200 and the code in
            the body; True answers a bad request (code 1) with 400 and a raising function
            (code 2) with 500, the same JSON body, as HTTP clients expect.
        threads: int >= 1, waitress's worker threads (requests served at once).
    Raises:
        ImportError: bottle (or, for the default server, waitress) is not installed:
            `pip install bert4keras[serving]`.
        ValueError: an unknown server name, or a port outside [0, 65535].
    Example:
        ``web = WebServing(port=8864)``;
        ``web.route('/gen_synonyms', gen_synonyms, {'text': (None, True), 'n': (int, False)})``;
        ``web.start()``; then ``http://127.0.0.1:8864/gen_synonyms?text=...&n=5``.
    Source: bert4keras 0.11.5 `WebServing` (which used bottle with 'paste' and TF1 sessions).
    """

    def __init__(self, host='0.0.0.0', port=8000, server='waitress', serialize=True, http_status=False, threads=4):
        try:
            import bottle
        except ImportError as e:
            raise ImportError('WebServing needs bottle: pip install "bert4keras[serving]" (bottle, waitress)') from e
        if server == 'waitress':
            try:
                import waitress  # noqa: F401
            except ImportError as e:
                raise ImportError(
                    "WebServing's default server needs waitress: pip install waitress, "
                    "or pass server='wsgiref' (single-threaded, from the standard library)"
                ) from e
        elif isinstance(server, str) and server not in bottle.server_names:
            raise ValueError('unknown server %r; bottle knows %s' % (server, sorted(bottle.server_names)))
        elif not isinstance(server, str) and not (
            isinstance(server, bottle.ServerAdapter)
            or (isinstance(server, type) and issubclass(server, bottle.ServerAdapter))
        ):
            raise ValueError(
                'server must be a name in bottle.server_names or a bottle.ServerAdapter, got %r' % (server,)
            )
        if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not 0 <= port <= 65535:
            raise ValueError('port must be an int in [0, 65535], got %r' % (port,))
        self.host = host
        self.port = int(port)
        self.server = server
        self.bottle = bottle
        self.app = bottle.Bottle()
        self.lock = threading.Lock() if serialize else None
        self.http_status = bool(http_status)
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError('threads must be an int >= 1, got %r' % (threads,))
        self.threads = int(threads)
        self._stopper = None  # set while serving: a callable that makes the server return
        self._thread = None
        self._adapter = None  # the bottle.ServerAdapter, for servers other than waitress

    # ----------------------------------------------------------------------------- routes

    def _check_route(self, func, arguments, method):
        """Validated `(arguments, methods)`; errors name the offending entry."""

        if not callable(func):
            raise TypeError('func must be callable, got %r' % (func,))
        if not isinstance(arguments, dict):
            raise TypeError('arguments must be a dict {name: (converter or None, required)}, got %s'
                            % type(arguments).__name__)
        checked = {}
        for name, spec in arguments.items():
            if not isinstance(name, str):
                raise TypeError('arguments keys must be str, got %r' % (name,))
            if not isinstance(spec, (tuple, list)) or len(spec) != 2 or not (spec[0] is None or callable(spec[0])):
                raise TypeError('arguments[%r] must be (converter or None, required), got %r' % (name, spec))
            checked[name] = (spec[0], bool(spec[1]))
        methods = [method] if isinstance(method, str) else list(method)
        methods = [str(m).upper() for m in methods]
        if not methods or any(m not in ('GET', 'POST') for m in methods):
            raise ValueError("method must be 'GET', 'POST' or a list of them, got %r" % (method,))
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):  # no signature (some builtins): nothing to check
            return checked, methods
        label = getattr(func, '__name__', repr(func))
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            for name, (_, required) in checked.items():
                p = params.get(name)
                if p is None or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    raise ValueError('arguments names %r but %s() takes no such keyword argument' % (name, label))
                if not required and p.default is p.empty:
                    raise ValueError('argument %r is optional in arguments but %s() has no default for it'
                                     % (name, label))
        for p in params.values():
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in checked:
                raise ValueError('%s() needs argument %r, which arguments does not declare' % (label, p.name))
        return checked, methods

    def _request_values(self):
        """A function name -> value (None when absent) for the current request, or a str
        saying why the request body cannot be read."""
        request = self.bottle.request
        if request.method in ('GET', 'HEAD'):
            return request.query.getunicode
        if request.content_type.split(';')[0].strip().lower() == 'application/json':
            try:
                body = json.loads(request.body.read().decode('utf-8') or 'null')
            except ValueError as e:
                return 'the request body is not valid JSON: %s' % e
            if not isinstance(body, dict):
                return 'the JSON body must be an object {name: value}, got %s' % type(body).__name__
            return body.get
        return request.forms.getunicode

    def wraps(self, func, arguments, method='GET'):
        """The bottle handler (no arguments) that serves `func`: reads and converts the
        arguments of the current request, calls `func(**kwargs)` and returns the JSON
        envelope (see the class docstring).

        Args:
            func: callable; its result must be JSON-serializable (NumPy values are converted).
            arguments: dict `{name: (converter, required)}`: `converter` a callable applied
                to the received value (a str from a query string or form; any JSON value from
                a JSON body), or None to pass it as is; `required` a bool. An absent optional
                argument is left to `func`'s default.
            method: 'GET', 'POST', or a list of both.
        Raises:
            TypeError: `func` is not callable or `arguments` is malformed (naming the entry).
            ValueError: `method` is not GET/POST; `arguments` names a keyword `func` does not
                take, marks optional an argument `func` has no default for, or leaves out one
                it requires.
        Source: bert4keras 0.11.5 `WebServing.wraps`.
        """
        arguments, _ = self._check_route(func, arguments, method)
        label = getattr(func, '__name__', repr(func))

        def reply(code, desc, data=None):
            self.bottle.response.content_type = 'application/json; charset=utf-8'
            if self.http_status:
                self.bottle.response.status = {0: 200, 1: 400, 2: 500}[code]
            return json.dumps({'code': code, 'desc': desc, 'data': {} if data is None else data},
                              ensure_ascii=False, default=_json_default)

        def handler():
            values = self._request_values()
            if isinstance(values, str):
                return reply(1, values)
            kwargs = {}
            for name, (converter, required) in arguments.items():
                value = values(name)
                if value is None:
                    if required:
                        return reply(1, 'lack of "%s" argument' % name)
                    continue
                if converter is not None:
                    try:
                        value = converter(value)
                    except Exception as e:
                        return reply(1, 'bad "%s" argument %r: %s: %s' % (name, value, type(e).__name__, e))
                kwargs[name] = value
            try:
                if self.lock is None:
                    data = func(**kwargs)
                else:
                    with self.lock:
                        data = func(**kwargs)
                return reply(0, 'succeeded', data)
            except Exception as e:
                import logging

                logging.getLogger(__name__).exception('WebServing: %s(**%r) raised', label, kwargs)
                return reply(2, str(e) or type(e).__name__)

        handler.__name__ = label
        return handler

    def route(self, path, func, arguments, method='GET'):
        """Serve `func` at `path` (e.g. '/gen_synonyms'); arguments as `wraps`.

        Source: bert4keras 0.11.5 `WebServing.route`.
        """
        _, methods = self._check_route(func, arguments, method)
        self.app.route(path, method=methods, callback=self.wraps(func, arguments, method))

    # ----------------------------------------------------------------------------- serving

    def start(self, background=False):
        """Serve until `stop()` (or Ctrl-C).

        Args:
            background: False to block (as bert4keras); True to serve from a daemon thread and
                return once the server accepts connections (`self.port` is then the actual
                port).
        Raises:
            RuntimeError: already serving. OSError: the port cannot be bound (in use), naming
            host and port.
        """
        if self._thread is not None or self._stopper is not None:
            raise RuntimeError('this WebServing is already serving on %s:%d' % (self.host, self.port))
        if not background:
            self._serve(threading.Event(), [])
            return
        ready, failure = threading.Event(), []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), name='WebServing', daemon=True)
        self._thread.start()
        while not ready.wait(0.05):
            if not self._thread.is_alive():
                break
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        if self.server != 'waitress':  # bottle's adapters do not say when they listen
            self._wait_for_connections()

    def _serve(self, ready, failure):
        try:
            if self.server == 'waitress':
                self._serve_waitress(ready)
            else:
                self._serve_bottle(ready)
        except BaseException as e:  # reported by start(background=True), raised otherwise
            if isinstance(e, OSError) and not ready.is_set():
                e = OSError(e.errno, 'WebServing cannot listen on %s:%d: %s' % (self.host, self.port, e.strerror or e))
            failure.append(e)
            ready.set()
            if not self._thread:
                raise e
        finally:
            self._stopper = None

    def _serve_waitress(self, ready):
        import waitress
        from waitress import wasyncore

        socket_map = {}
        server = waitress.create_server(self.app, map=socket_map, host=self.host, port=self.port,
                                        threads=self.threads)
        listening = getattr(server, 'effective_listen', None)
        self.port = int(listening[0][1] if listening else server.effective_port)
        # stop() only sets an event, which the event loop checks between short polls; the channels
        # are closed in the loop's own thread. (No cross-thread write to waitress's trigger pipe.)
        stopping = threading.Event()
        self._stopper = stopping.set
        ready.set()
        if not self._thread:
            print('WebServing: serving on http://%s:%d/ (Ctrl-C to stop)' % (self.host, self.port), file=sys.stderr)
        try:
            while socket_map and not stopping.is_set():
                wasyncore.loop(timeout=0.1, map=socket_map, use_poll=server.adj.asyncore_use_poll, count=1)
        except KeyboardInterrupt:  # Ctrl-C ends a foreground server quietly, as bottle.run does
            pass
        finally:
            server.task_dispatcher.shutdown()
            wasyncore.close_all(socket_map, ignore_all=True)

    def _serve_bottle(self, ready):
        bottle = self.bottle
        server = self.server
        if isinstance(server, str):
            server = bottle.server_names[server]
        if isinstance(server, type):
            server = server(host=self.host, port=self.port)
        adapter = self._adapter = server

        def stop():
            srv = getattr(adapter, 'srv', None)  # bottle's wsgiref adapter keeps its server here
            if srv is None or not hasattr(srv, 'shutdown'):
                raise RuntimeError('stop() is not supported for server=%r: stop the process instead' % (self.server,))
            srv.shutdown()
            srv.server_close()

        self._stopper = stop
        ready.set()
        bottle.run(app=self.app, server=adapter, quiet=bool(self._thread))

    def _wait_for_connections(self, timeout=30.0):

        host = {'0.0.0.0': '127.0.0.1', '::': '::1', '': '127.0.0.1'}.get(self.host, self.host)
        deadline = time.monotonic() + timeout
        while True:
            port = self.port or int(getattr(self._adapter, 'port', 0) or 0)  # wsgiref's adapter sets it
            try:
                if port:
                    socket.create_connection((host, port), timeout=1).close()
                    self.port = port
                    return
            except OSError:
                pass
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError('server %r did not accept connections on %s:%d' % (self.server, host, port))
            time.sleep(0.05)

    def stop(self, timeout=10.0):
        """Stop serving (from another thread, or after `start(background=True)`) and wait for
        the serving thread to end; nothing happens when not serving.

        Raises:
            RuntimeError: the server kind cannot be stopped (see `server`), or did not stop
                within `timeout` seconds.
        """
        stopper = self._stopper
        if stopper is not None:
            stopper()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError('the server did not stop within %s s' % timeout)


class Batcher:
    """Gathers single calls from many threads into batched calls of one function (dynamic batching
    for serving: concurrent requests share one `model.predict`).

    ``batcher(item)`` (from any thread) returns ``func(items)[i]``, where ``items`` holds ``item``
    and the items of the calls that arrived within ``max_delay`` seconds of the first waiting one,
    at most ``max_batch_size`` of them; ``func`` runs in the batcher's own thread, one batch at a
    time (so it need not be thread-safe). When ``func`` raises, every call of that batch raises it.

    Args:
        func: callable, a list of items -> a list (or array) of as many results, in order.
        max_batch_size: int >= 1. max_delay: float >= 0, seconds to wait for more calls.
    Raises (when called): what ``func`` raised; RuntimeError when ``func`` returns another number
        of results, or the batcher was closed.
    Source: the dynamic batching of TF Serving and Triton (max batch size, max queue delay).
    """

    def __init__(self, func, max_batch_size=32, max_delay=0.005):
        if not callable(func):
            raise TypeError('func must be callable, got %r' % (func,))
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, (int, np.integer)) or max_batch_size < 1:
            raise ValueError('max_batch_size must be an int >= 1, got %r' % (max_batch_size,))
        if isinstance(max_delay, bool) or not isinstance(max_delay, (int, float)) or not max_delay >= 0:
            raise ValueError('max_delay must be a number of seconds >= 0, got %r' % (max_delay,))
        self.func = func
        self.max_batch_size = int(max_batch_size)
        self.max_delay = float(max_delay)
        self.batch_sizes = []  # the size of every batch run, for monitoring
        self._queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name='Batcher', daemon=True)
        self._thread.start()

    def __call__(self, item):
        if self._closed:
            raise RuntimeError('this Batcher is closed')
        done, outcome = threading.Event(), []
        self._queue.put((item, done, outcome))
        done.wait()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def close(self):
        """Stop the batcher's thread once the calls already waiting are answered."""
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _run(self):
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_delay
            while len(batch) < self.max_batch_size:
                try:
                    call = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if call is None:  # closing: answer this batch, then stop
                    self._queue.put(None)
                    break
                batch.append(call)
            self.batch_sizes.append(len(batch))
            try:
                results = list(self.func([item for item, _, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError('Batcher: func returned %d results for %d items' % (len(results), len(batch)))
                outcomes = [(True, r) for r in results]
            except Exception as e:
                outcomes = [(False, e)] * len(batch)
            for (_, done, outcome), result in zip(batch, outcomes):
                outcome.append(result)
                done.set()
