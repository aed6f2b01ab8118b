/*!
 * wspush.js: the browser client of wspush's JSON mode (subprotocol `wspush.v1`).
 *
 *   const c = wspush.connect("ws://" + location.host + "/ws");
 *   const sub = c.subscribe("room:1", (data, { offset }) => show(offset, data), {
 *     onJoin: (m) => ..., onLeave: (m) => ..., onReset: ({ oldest }) => reloadState(),
 *   });
 *   await c.publish("room:1", { text: "hi" });   // -> the message's offset
 *   c.on("state", (state) => badge.textContent = state);
 *
 * The connection reconnects by itself (exponential backoff with jitter) and
 * resubscribes every channel from the last offset it delivered, so the application sees
 * every message of a channel once and in order across reconnects. When the server's
 * history no longer reaches back that far, `onReset` tells the application to reload.
 *
 * When the WebSocket cannot open (a proxy refuses the upgrade), the connection falls
 * back to Server-Sent Events (`/sse`) by itself: the same `subscribe`, `on('state')`
 * and resume guarantee; `connection.transport` says which one is in use. Over SSE the
 * connection only receives: `publish`, `presence` and `history` reject with code
 * `unsupported` (publish through your backend and the HTTP API).
 *
 * A classic script without dependencies: it defines `globalThis.wspush`. The server
 * also serves it as an ES module at /wspush.mjs (`import { connect } from "/wspush.mjs"`).
 */
(function (root) {
  "use strict";

  const SUBPROTOCOL = "wspush.v1";
  const OPEN = 1; // WebSocket.OPEN
  const noop = () => {};

  /**
   * An error from the server (`code` is its machine-readable code, e.g. `forbidden`,
   * `history_gone`) or from the library: `disconnected` (the connection dropped before
   * the reply came; the command may or may not have run), `closed` (`close()` was
   * called), `bad_request` (invalid arguments, caught before sending).
   */
  class WspushError extends Error {
    /**
     * @param {string} code
     * @param {string} message
     * @param {object} [details] extra fields of the server's error (e.g. `oldest`)
     */
    constructor(code, message, details) {
      super(message);
      this.name = "WspushError";
      /** @type {string} */
      this.code = code;
      if (details) {
        for (const key of Object.keys(details)) {
          if (key !== "code" && key !== "message") this[key] = details[key];
        }
      }
    }
  }

  /** Calls an application callback; an exception is reported without breaking the library. */
  function safely(fn, ...args) {
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      setTimeout(() => {
        throw err;
      });
    }
  }

  /** Makes `url` absolute (a path is taken relative to the page) and adds `?token=`. */
  function buildUrl(url, token) {
    let base;
    if (root.location && root.location.host) {
      base = (root.location.protocol === "https:" ? "wss://" : "ws://") + root.location.host + "/";
    }
    const u = new URL(url, base);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    if (token != null && token !== "") u.searchParams.set("token", String(token));
    return u.toString();
  }

  function checkChannel(channel) {
    if (typeof channel !== "string" || channel === "") {
      throw new WspushError("bad_request", "channel must be a non-empty string");
    }
  }

  /** The `/sse` URL next to a `/ws` URL (`ws:` -> `http:`, last path segment `sse`). */
  function sseUrl(wsUrl) {
    const u = new URL(wsUrl);
    u.protocol = u.protocol === "wss:" ? "https:" : "http:";
    u.pathname = u.pathname.replace(/[^/]*$/, "sse");
    u.searchParams.delete("channels");
    u.searchParams.delete("protocol");
    return u;
  }

  /** Splits an SSE event id `<epoch>:<offset>:<channel>`; null if it is not one. */
  function parseEventId(id) {
    const a = id.indexOf(":");
    const b = a < 0 ? -1 : id.indexOf(":", a + 1);
    if (b < 0) return null;
    const offset = Number(id.slice(a + 1, b));
    if (!Number.isSafeInteger(offset)) return null;
    return { epoch: id.slice(0, a), offset, channel: id.slice(b + 1) };
  }

  /**
   * One channel subscription, returned by `Connection#subscribe`.
   */
  class Subscription {
    constructor(conn, channel, onMessage, options) {
      /** The channel. @type {string} */
      this.channel = channel;
      /** Offset of the last message delivered to `onMessage` (null before the first subscribe). @type {?number} */
      this.offset = options.since != null ? options.since : null;
      /** Epoch the offsets belong to (changes when the server loses its history, e.g. a restart). @type {?string} */
      this.epoch = options.epoch != null ? options.epoch : null;
      /** `pending` (waiting for the server), `active` or `closed`. @type {string} */
      this.state = "pending";
      this._conn = conn;
      this._onMessage = onMessage;
      this._options = options;
      this._retries = 0;
      let settle;
      /**
       * Resolves with `{offset, epoch}` once the server confirmed the first subscribe;
       * rejects with a WspushError (e.g. `forbidden`) if it refused.
       * @type {Promise<{offset: number, epoch: string}>}
       */
      this.ready = new Promise((resolve, reject) => {
        settle = { resolve, reject };
      });
      this.ready.catch(noop); // not awaiting it is fine
      this._settle = settle;
    }

    /**
     * Stops the subscription: no callback runs for it afterwards.
     * @returns {Promise<void>} resolves when the server confirmed (at once when offline)
     */
    unsubscribe() {
      if (this.state === "closed") return Promise.resolve();
      this._close(new WspushError("closed", "unsubscribed"));
      return this._conn._unsubscribe(this);
    }

    _close(err) {
      this.state = "closed";
      this._settle.reject(err);
    }
  }

  /**
   * A connection to a wspush server in JSON mode. Create it with `wspush.connect`.
   */
  class Connection {
    constructor(url, options) {
      const opts = options || {};
      this._WebSocket = opts.WebSocket || root.WebSocket;
      if (typeof this._WebSocket !== "function") {
        throw new TypeError("wspush: no WebSocket implementation (pass options.WebSocket)");
      }
      this._url = buildUrl(url, opts.token);
      this._minDelay = opts.minDelay != null ? opts.minDelay : 500;
      this._maxDelay = Math.max(this._minDelay, opts.maxDelay != null ? opts.maxDelay : 30000);
      this._pingInterval = opts.pingInterval != null ? opts.pingInterval : 25000;
      this._EventSource = opts.EventSource || root.EventSource;
      this._fallback = opts.fallback !== false && typeof this._EventSource === "function";
      this._sseUrl = opts.sseUrl ? new URL(buildUrl(opts.sseUrl, opts.token).replace(/^ws/, "http")) : sseUrl(this._url);
      /** `websocket`, or `sse` after a fallback. @type {string} */
      this.transport = "websocket";
      this._es = null; // the EventSource while on SSE
      this._lastId = ""; // the last SSE event id seen (events without one repeat it)
      this._reopen = null; // a pending SSE reopen (the channel set changed)

      /** `connecting`, `open`, `reconnecting` or `closed`. @type {string} */
      this.state = "connecting";
      this._ws = null;
      this._attempt = 0; // failed attempts since the last successful connect
      this._timer = null; // the reconnect timer
      this._heartbeat = null;
      this._awaitingPong = false;
      this._nextId = 1;
      this._inflight = new Map(); // id -> command sent on the current socket
      this._queue = []; // commands waiting for the connection
      this._subs = new Map(); // channel -> Subscription
      this._leaving = new Map(); // channel -> unsubscribes in flight (late pushes are dropped)
      this._listeners = { state: [], message: [], error: [] };
      this._onOnline = () => {
        if (this.state === "reconnecting" && this._timer) this._reconnectNow();
      };
      if (typeof root.addEventListener === "function") root.addEventListener("online", this._onOnline);
      // Connect once the caller's code has run, so listeners it adds see `connecting`.
      queueMicrotask(() => {
        if (this.state !== "connecting") return; // closed already
        this._emit("state", "connecting", {});
        this._open();
      });
    }

    // ----- public API -------------------------------------------------------------

    /**
     * Listens to `state` (fn(state, info): `connecting` (first attempt), `open`,
     * `reconnecting` (for every retry, with `{code, reason, delay}` of the drop), `closed`),
     * `message` (fn(data, {channel, offset}) for pushes outside any subscription:
     * `POST /api/send` to this client, broadcasts to every client) or `error` (fn(err) for
     * errors no command or subscription owns; logged to the console when nobody listens).
     * @param {"state"|"message"|"error"} event
     * @param {Function} fn
     * @returns {() => void} removes the listener
     */
    on(event, fn) {
      const list = this._listeners[event];
      if (!list) throw new TypeError("wspush: unknown event " + JSON.stringify(event));
      list.push(fn);
      return () => this.off(event, fn);
    }

    /** Removes a listener added with `on`. */
    off(event, fn) {
      const list = this._listeners[event];
      const i = list ? list.indexOf(fn) : -1;
      if (i >= 0) list.splice(i, 1);
    }

    /**
     * Subscribes to a channel. Messages reach `onMessage(data, {channel, offset})` in
     * offset order, each once, across reconnects.
     * @param {string} channel
     * @param {(data: any, info: {channel: string, offset: number, encoding?: string}) => void} onMessage
     * @param {object} [options]
     * @param {(m: {channel: string, client: string, user?: string}) => void} [options.onJoin] another client joined (presence channels)
     * @param {(m: {channel: string, client: string, user?: string}) => void} [options.onLeave] another client left
     * @param {(r: {channel: string, oldest: number, offset: number}) => void} [options.onReset]
     *   messages were lost (the server's history no longer reaches back to the last offset
     *   seen, or the server restarted): reload the state; live messages continue after it
     * @param {(s: {channel: string, offset: number, epoch: string, recovered: boolean}) => void} [options.onSubscribed]
     *   the subscription took effect on a (new) connection: a good moment to refresh presence
     * @param {(err: WspushError) => void} [options.onError] the server refused the subscription (it is closed)
     * @param {number} [options.since] start after this offset (e.g. one saved earlier) instead of now
     * @param {string} [options.epoch] the epoch `since` belongs to
     * @returns {Subscription}
     */
    subscribe(channel, onMessage, options) {
      checkChannel(channel);
      if (this.state === "closed") throw new WspushError("closed", "the connection is closed");
      if (this._subs.has(channel)) {
        throw new WspushError("already_subscribed", "already subscribed to " + JSON.stringify(channel));
      }
      const sub = new Subscription(this, channel, onMessage, options || {});
      this._subs.set(channel, sub);
      if (this.state === "open") {
        if (this.transport === "sse") this._reopenSse();
        else this._sendSubscribe(sub);
      }
      return sub;
    }

    /**
     * Publishes any JSON value to a channel. Resolves with the message's offset. Made
     * while disconnected, it waits for the connection; if the connection drops before
     * the reply, it rejects with code `disconnected` (the message may have been published).
     * @param {string} channel
     * @param {*} data
     * @returns {Promise<number>}
     */
    publish(channel, data) {
      return this._command({ op: "publish", channel, data }, false).then((r) => r.offset);
    }

    /**
     * Who is subscribed to a presence channel.
     * @param {string} channel
     * @returns {Promise<Array<{client: string, user: ?string}>>}
     */
    presence(channel) {
      return this._command({ op: "presence", channel }, true).then((r) => r.clients);
    }

    /**
     * Stored messages of a channel.
     * @param {string} channel
     * @param {{since?: number, epoch?: string, limit?: number}} [options]
     * @returns {Promise<{messages: Array<{offset: number, data: any}>, offset: number, epoch: string}>}
     */
    history(channel, options) {
      const o = options || {};
      const cmd = { op: "history", channel };
      if (o.since != null) cmd.since = o.since;
      if (o.epoch != null) cmd.epoch = o.epoch;
      if (o.limit != null) cmd.limit = o.limit;
      return this._command(cmd, true).then((r) => ({ messages: r.messages, offset: r.offset, epoch: r.epoch }));
    }

    /**
     * Closes the connection for good: no reconnect; waiting commands reject with `closed`.
     */
    close() {
      if (this.state === "closed") return;
      clearTimeout(this._timer);
      this._timer = null;
      if (typeof root.removeEventListener === "function") root.removeEventListener("online", this._onOnline);
      const err = () => new WspushError("closed", "the connection was closed");
      const sock = this._ws;
      this._detach();
      if (sock) {
        try {
          sock.close(1000, "bye");
        } catch (e) {
          // already closing
        }
      }
      clearTimeout(this._reopen);
      for (const cmd of this._queue.concat(Array.from(this._inflight.values()))) cmd.reject(err());
      this._queue = [];
      this._inflight.clear();
      this._leaving.clear();
      for (const sub of this._subs.values()) sub._close(err());
      this._subs.clear();
      this._setState("closed");
    }

    // ----- connection lifecycle ---------------------------------------------------

    _open() {
      if (this.transport === "sse") {
        this._openSse();
        return;
      }
      let opened = false;
      let sock;
      try {
        sock = new this._WebSocket(this._url, SUBPROTOCOL);
      } catch (err) {
        this._emit("error", err);
        this._lost(0, String(err && err.message));
        return;
      }
      this._ws = sock;
      sock.onopen = () => {
        opened = true;
        this._opened();
      };
      sock.onmessage = (ev) => this._receive(ev.data);
      sock.onerror = noop; // a close event follows
      sock.onclose = (ev) => {
        if (this._ws !== sock) return;
        this._detach();
        // Never opened (a proxy refusing the upgrade, say): try SSE next.
        if (!opened && this._fallback) this.transport = "sse";
        this._lost(ev.code, ev.reason);
      };
    }

    _opened() {
      this._attempt = 0;
      this.state = "open";
      // Subscriptions first (recovering what was missed), then whatever waited; then
      // the listeners hear of it (what they do now is sent after these).
      for (const sub of this._subs.values()) this._sendSubscribe(sub);
      const queued = this._queue;
      this._queue = [];
      for (const cmd of queued) this._transmit(cmd);
      if (this._pingInterval > 0) {
        this._awaitingPong = false;
        this._heartbeat = setInterval(() => this._beat(), this._pingInterval);
      }
      this._emit("state", "open", {});
    }

    /** Sends a ping; if the previous one is still unanswered the connection is dead. */
    _beat() {
      if (this._awaitingPong) {
        const sock = this._ws;
        this._detach();
        try {
          sock.close(4000, "no answer to ping");
        } catch (e) {
          // ignore
        }
        this._lost(4000, "no answer to ping");
        return;
      }
      this._awaitingPong = true;
      this._request({ op: "ping" }, noop);
    }

    /** Forgets the current socket (its late events are ignored). */
    _detach() {
      clearInterval(this._heartbeat);
      this._heartbeat = null;
      if (this._es) {
        this._es.close();
        this._es = null;
      }
      const sock = this._ws;
      this._ws = null;
      if (sock) {
        sock.onopen = sock.onmessage = sock.onclose = null;
        sock.onerror = noop;
      }
    }

    /** The connection is gone: settle in-flight commands and schedule a reconnect. */
    _lost(code, reason) {
      const retry = [];
      for (const cmd of this._inflight.values()) {
        if (cmd.retry) retry.push(cmd);
        else cmd.reject(new WspushError("disconnected", "the connection dropped before the reply"));
      }
      this._inflight.clear();
      this._leaving.clear();
      this._queue = retry.concat(this._queue);
      for (const sub of this._subs.values()) {
        if (sub.state === "active") sub.state = "pending";
      }
      if (this.state === "closed") return;
      this._attempt += 1;
      const ceiling = Math.min(this._maxDelay, this._minDelay * Math.pow(2, this._attempt));
      const delay = Math.round(this._minDelay + Math.random() * (ceiling - this._minDelay));
      this._timer = setTimeout(() => this._reconnectNow(), delay);
      this._setState("reconnecting", { code, reason, delay });
    }

    _reconnectNow() {
      clearTimeout(this._timer);
      this._timer = null;
      if (this.state === "closed" || this._ws || this._es) return;
      this._open();
    }

    _setState(state, info) {
      this.state = state;
      this._emit("state", state, info || {});
    }

    _emit(event, ...args) {
      const list = this._listeners[event];
      if (event === "error" && list.length === 0 && root.console) root.console.warn("wspush:", ...args);
      for (const fn of list.slice()) safely(fn, ...args);
    }

    // ----- commands ---------------------------------------------------------------

    /**
     * Sends an application's command (now, or once the connection is open); resolves
     * with the reply. `retry`: resend it on the next connection if this one drops
     * before the reply (for commands that change nothing).
     */
    _command(fields, retry) {
      return new Promise((resolve, reject) => {
        if (this.state === "closed") throw new WspushError("closed", "the connection is closed");
        checkChannel(fields.channel);
        if (fields.op === "publish" && fields.data === undefined) {
          throw new WspushError("bad_request", "publish needs data (any JSON value)");
        }
        if (this.transport === "sse") {
          throw new WspushError("unsupported", fields.op + " needs the WebSocket; this connection fell back to SSE");
        }
        const cmd = { fields, retry, internal: false, resolve, reject };
        if (this.state === "open") this._transmit(cmd);
        else this._queue.push(cmd);
      });
    }

    /**
     * Sends one of the library's own commands (subscribe, unsubscribe, ping) on the
     * open socket. The callbacks run synchronously with the reply, before any later
     * frame is handled (a promise would run them too late). Forgotten with the socket.
     */
    _request(fields, onReply, onError) {
      this._transmit({ fields, retry: false, internal: true, resolve: onReply, reject: onError || noop });
    }

    _transmit(cmd) {
      const id = this._nextId++;
      let text;
      try {
        text = JSON.stringify(Object.assign({ id }, cmd.fields));
      } catch (err) {
        cmd.reject(new WspushError("bad_request", "data is not serializable as JSON: " + err.message));
        return;
      }
      this._inflight.set(id, cmd);
      this._ws.send(text);
    }

    _receive(text) {
      this._awaitingPong = false; // anything arriving proves the connection alive
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (err) {
        this._emit("error", new WspushError("bad_frame", "the server sent a frame that is not JSON"));
        return;
      }
      if (msg === null || typeof msg !== "object") return;
      if ("id" in msg) this._reply(msg);
      else if (typeof msg.event === "string") this._presenceEvent(msg);
      else if (typeof msg.channel === "string") this._push(msg);
    }

    _reply(msg) {
      const cmd = this._inflight.get(msg.id);
      if (!cmd) {
        if (msg.error) {
          this._emit("error", new WspushError(msg.error.code, msg.error.message, msg.error));
        }
        return;
      }
      this._inflight.delete(msg.id);
      if (msg.error) cmd.reject(new WspushError(msg.error.code, msg.error.message, msg.error));
      else cmd.resolve(msg);
    }

    _push(msg) {
      const sub = this._subs.get(msg.channel);
      const info = { channel: msg.channel, offset: msg.offset };
      if (msg.encoding) info.encoding = msg.encoding;
      if (!sub) {
        if (!this._leaving.has(msg.channel)) this._emit("message", msg.data, info);
        return;
      }
      // Before the subscribe reply nothing belongs to this subscription (the server
      // queues the reply before any replayed or live message); offsets at or below the
      // last delivered one were already delivered.
      if (sub.state !== "active" || typeof msg.offset !== "number") return;
      if (sub.offset != null && msg.offset <= sub.offset) return;
      sub.offset = msg.offset;
      safely(sub._onMessage, msg.data, info);
    }

    _presenceEvent(msg) {
      const sub = this._subs.get(msg.channel);
      if (!sub || sub.state !== "active") return;
      const member = { channel: msg.channel, client: msg.client };
      if (msg.user != null) member.user = msg.user;
      if (msg.event === "join") safely(sub._options.onJoin, member);
      else if (msg.event === "leave") safely(sub._options.onLeave, member);
    }

    // ----- subscriptions ----------------------------------------------------------

    _sendSubscribe(sub) {
      const fields = { op: "subscribe", channel: sub.channel };
      const recovering = sub.offset != null;
      if (recovering) {
        fields.since = sub.offset;
        if (sub.epoch != null) fields.epoch = sub.epoch;
      }
      sub.state = "pending";
      const ws = this._ws;
      this._request(
        fields,
        (reply) => {
          if (sub.state === "closed" || this._ws !== ws) return;
          if (!recovering) sub.offset = reply.offset;
          sub.epoch = reply.epoch;
          sub.state = "active";
          sub._retries = 0;
          sub._settle.resolve({ offset: reply.offset, epoch: reply.epoch });
          safely(sub._options.onSubscribed, {
            channel: sub.channel,
            offset: reply.offset,
            epoch: reply.epoch,
            recovered: recovering,
          });
        },
        (err) => {
          if (sub.state === "closed" || this._ws !== ws) return;
          this._subscribeFailed(sub, err);
        },
      );
    }

    _subscribeFailed(sub, err) {
      if (err.code === "history_gone") {
        // Messages were lost: the application reloads, then live messages continue.
        sub.offset = null;
        sub.epoch = null;
        safely(sub._options.onReset, { channel: sub.channel, oldest: err.oldest, offset: err.offset });
        if (sub.state !== "closed" && this.state === "open") this._sendSubscribe(sub);
      } else if (err.code === "broker_unavailable") {
        // Transient: try again on this connection after a backoff delay.
        sub._retries += 1;
        const ceiling = Math.min(this._maxDelay, this._minDelay * Math.pow(2, sub._retries));
        const ws = this._ws;
        setTimeout(() => {
          if (sub.state === "pending" && this._ws === ws && this.state === "open") this._sendSubscribe(sub);
        }, this._minDelay + Math.random() * (ceiling - this._minDelay));
      } else {
        this._subs.delete(sub.channel);
        sub._close(err);
        if (sub._options.onError) safely(sub._options.onError, err);
        else this._emit("error", err);
      }
    }

    _unsubscribe(sub) {
      if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
      if (this.state !== "open") return Promise.resolve();
      if (this.transport === "sse") {
        this._reopenSse();
        return Promise.resolve();
      }
      const channel = sub.channel;
      const ws = this._ws;
      this._leaving.set(channel, (this._leaving.get(channel) || 0) + 1);
      const done = () => {
        if (this._ws !== ws) return;
        const n = this._leaving.get(channel) - 1;
        if (n > 0) this._leaving.set(channel, n);
        else this._leaving.delete(channel);
      };
      return new Promise((resolve) => {
        const settle = () => {
          done();
          resolve();
        };
        this._request({ op: "unsubscribe", channel }, settle, settle);
      });
    }
  }

  Object.assign(Connection.prototype, {
    // ----- the SSE fallback ---------------------------------------------------------

    /** Opens an event stream of every subscription, resuming each from its position. */
    _openSse() {
      const url = new URL(this._sseUrl);
      const channels = [];
      const since = [];
      for (const sub of this._subs.values()) {
        channels.push(sub.channel);
        sub.state = "pending";
        if (sub.offset != null && sub.epoch != null) since.push(sub.epoch + ":" + sub.offset + ":" + sub.channel);
      }
      if (channels.length) url.searchParams.set("channels", channels.join(","));
      if (since.length) url.searchParams.set("since", since.join(","));
      let opened = false;
      let es;
      try {
        es = new this._EventSource(url.toString());
      } catch (err) {
        this._emit("error", err);
        this.transport = "websocket";
        this._lost(0, String(err && err.message));
        return;
      }
      this._es = es;
      this._lastId = "";
      es.onopen = () => {
        opened = true;
        this._attempt = 0;
        const queued = this._queue;
        this._queue = [];
        const err = new WspushError("unsupported", "this connection fell back to SSE, which only receives");
        for (const cmd of queued) cmd.reject(err);
        if (this.state !== "open") this._setState("open");
      };
      const on = (type, fn) =>
        es.addEventListener(type, (ev) => {
          if (this._es === es) fn(ev);
        });
      on("subscribed", (ev) => this._sseStart(ev, false));
      on("reset", (ev) => this._sseStart(ev, true));
      on("message", (ev) => this._sseMessage(ev));
      on("join", (ev) => this._presenceEvent(JSON.parse(ev.data)));
      on("leave", (ev) => this._presenceEvent(JSON.parse(ev.data)));
      // The browser would reconnect with only the last event's id; we reconnect with
      // every channel's position instead (and with backoff).
      es.onerror = () => {
        if (this._es !== es) return;
        this._detach();
        if (!opened) this.transport = "websocket"; // neither works yet: alternate
        this._lost(0, "the event stream failed");
      };
    },

    /** The channel set changed: a new stream soon (each channel resumes where it was). */
    _reopenSse() {
      if (this._reopen) return;
      this._reopen = setTimeout(() => {
        this._reopen = null;
        if (this.state === "closed" || !this._es) return;
        this._detach();
        this._openSse();
      });
    },

    _sseStart(ev, reset) {
      this._lastId = ev.lastEventId;
      const d = JSON.parse(ev.data);
      const sub = this._subs.get(d.channel);
      if (!sub || sub.state === "closed") return;
      const recovering = !reset && sub.offset != null;
      if (reset) safely(sub._options.onReset, { channel: d.channel, offset: d.offset });
      if (!recovering) sub.offset = d.offset;
      sub.epoch = d.epoch;
      sub.state = "active";
      sub._settle.resolve({ offset: d.offset, epoch: d.epoch });
      safely(sub._options.onSubscribed, { channel: d.channel, offset: d.offset, epoch: d.epoch, recovered: recovering });
    },

    _sseMessage(ev) {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (err) {
        data = ev.data; // text that is not JSON
      }
      // An event without an id (a broadcast, a direct send) repeats the last one.
      const id = ev.lastEventId !== this._lastId ? parseEventId(ev.lastEventId) : null;
      this._lastId = ev.lastEventId;
      if (!id) {
        this._emit("message", data, {});
        return;
      }
      this._push({ channel: id.channel, offset: id.offset, data });
    },
  });

  /**
   * Connects to a wspush server in JSON mode.
   * @param {string} url e.g. `ws://host:8083/ws` (or a path like `/ws`, relative to the page)
   * @param {object} [options]
   * @param {string} [options.token] sent as `?token=`
   * @param {Function} [options.WebSocket] the WebSocket constructor (default: the global one;
   *   in node pass the `ws` package's)
   * @param {number} [options.minDelay=500] ms; the n-th retry after a drop waits a random
   *   time between minDelay and min(maxDelay, minDelay * 2^n)
   * @param {number} [options.maxDelay=30000] ms
   * @param {number} [options.pingInterval=25000] ms between liveness pings; a ping
   *   unanswered for that long drops the connection (0: off)
   * @param {boolean} [options.fallback=true] fall back to Server-Sent Events when the
   *   WebSocket cannot open (needs `EventSource`)
   * @param {string} [options.sseUrl] the event stream's URL (default: `/sse` beside `url`)
   * @param {Function} [options.EventSource] the EventSource constructor (default: the global one)
   * @returns {Connection}
   */
  function connect(url, options) {
    return new Connection(url, options);
  }

  root.wspush = Object.freeze({ connect, WspushError, version: "1" });
})(typeof globalThis !== "undefined" ? globalThis : this);
