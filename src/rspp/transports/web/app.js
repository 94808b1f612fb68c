// The RSPP call page: the call protocol (docs/protocol.md) in a browser.
//
// One Call button, one WebSocket per call. The microphone goes through an AudioWorklet
// (capture-worklet.js) as PCM16 frames of 20 ms at the AudioContext's rate; bot audio goes
// into another (playback-worklet.js), a ring buffer that a `control.clear_buffer` empties
// before the next render quantum. Only the playback worklet knows what was played, so the
// playback reports and the latency the page shows come from it.
//
// Nothing here is built or fetched from elsewhere: plain modules, served by `rspp serve`.
// The address says what to do: `?token=` (required: `rspp serve` prints a link with one),
// `&pipeline=` (one of GET /v1/pipelines; default: the server's first), `&playout_ms=`
// (the playback worklet's playout delay), `&rate=` (the AudioContext's rate, 16000 by default).
//
// `window.rspp` is a small debug object (the page's state, counters, the clear log, the
// transcript and the replies, and a few actions) for people and for the browser tests.

const PROTOCOL = 1;
const ABI = "1.3";
const FRAME_MS = 20;
// A microphone frame louder than this counts as the user speaking (for the page's own
// end-of-speech moment; the server's VAD decides the turn).
const VOICED_DB = -50;
// How far before `vad.speech_end` arrives the page looks for the last loud frame.
const SPEECH_END_LOOKBACK_MS = 2000;
// Audio queued in the socket beyond this is not sent: real time beats completeness.
const MAX_SOCKET_BACKLOG = 64 * 1024;
const MAX_EVENTS = 400;
const UTF8 = new TextDecoder();

// docs/protocol.md, "Errors and close codes".
const CLOSE_CODES = {
  1000: "the call ended normally",
  1001: "the server is going away",
  1005: "the connection closed without a status",
  1006: "the connection was lost (no close frame)",
  1011: "server error",
  1012: "the server is restarting",
  4400: "protocol error",
  4401: "no token, a bad token, or an expired one",
  4403: "this page's origin is not allowed to call",
  4404: "the call is over (unknown resume token, or its window has passed)",
  4408: "no call.hello in time",
  4409: "another connection took over this call",
  4413: "a frame was too large",
  4429: "flooding: too much audio or too many messages",
  4503: "the server is not ready (models still loading) or full",
  4508: "slow consumer: this page did not read its audio fast enough",
};
// Closes after which reconnecting cannot help. Anything else, once a call is open, is a
// dropped connection: resume it within the window.
const FINAL_CLOSES = new Set([1000, 4400, 4401, 4403, 4404, 4408, 4409, 4413, 4429, 4503]);

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token") || "";
const PIPELINE = params.get("pipeline") || "";
// The AudioContext's rate, announced both ways in call.hello. Every pipeline shipped runs at
// 16 kHz (and Piper speaks at 22.05 kHz, resampled to it): a context at that rate loses
// nothing, and the server has nothing to resample (soxr holds audio back and releases it
// in blocks, docs in rspp/transports/audio.py). The browser converts to and from the
// devices' rates itself. `?rate=0`: the device's own rate (the server resamples).
const RATE = Number(params.get("rate") ?? 16000);
// The playback worklet's playout delay (ms; see playback-worklet.js). The server sends its
// audio `lead_ms` (60) ahead of real time, which covers a network's jitter: at 16 kHz the
// page plays frames as they come. At another rate the server's resampler releases audio in
// blocks of about 40 ms, and 20 ms more of playout delay keeps that from gaps (measured:
// a few underruns per reply at 0 ms, none at 20).
const PLAYOUT_MS = params.has("playout_ms") ? Number(params.get("playout_ms")) : null;

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  server: $("server"),
  call: $("call"),
  micLevel: $("mic-level"),
  micDb: $("mic-db"),
  buffered: $("buffered"),
  frames: $("frames"),
  underruns: $("underruns"),
  error: $("error"),
  log: $("log"),
  say: $("say"),
  text: $("text"),
  send: $("send"),
  latencyHead: $("latency-head"),
  latency: $("latency"),
  clears: $("clears"),
};

// -- what the page knows (also the debug object's data) -------------------------------

const page = {
  state: "idle", // idle, starting, connecting, in-call, reconnecting, ended, error
  detail: "",
  error: null, // {code, reason, message}: what stopped the call
  server: "unknown", // ready, loading, unreachable (from /readyz)
  session: null,
  pipeline: null,
  sampleRate: null,
  leadMs: null,
  resumes: 0,
  lastPos: null, // the highest [inc, pos] received
  lastSeq: null, // the highest [inc, seq] of any event received (text too): a resume says it
  micLevel: 0, // RMS of the last microphone frame, 0..1
  micDb: -Infinity,
  micPeak: 0, // the loudest sample seen this call, 0..1
  micFrames: 0,
  micFramesSent: 0,
  micFramesDropped: 0,
  framesReceived: 0,
  framesPlayed: 0,
  framesDuplicate: 0,
  framesEmpty: 0, // frames with no samples (only a header and maybe words)
  framesLate: 0, // frames of a turn already cleared (dropped)
  underruns: 0, // a reply's audio ran out before its next frame came (a gap was heard)
  bufferedMs: 0,
  clears: [],
  transcript: [], // [{turn, text, final, typed}]
  replies: [], // [{turn, text, spoken, heard, interrupted, done}]
  latency: [], // [{turn, from, speechEndAt, firstPlayedAt, heardMs, server}]
  positions: [], // the playback.position reports sent (the last few)
  errors: [], // non-fatal `error` events from the server
  closes: [], // [{code, reason, at}]
  events: [], // [{kind, turn, at}], the last few
  log: [], // the conversation, in order: references into transcript and replies
};

// -- the call -------------------------------------------------------------------------

class Call {
  constructor() {
    this.ctx = null;
    this.stream = null;
    this.capture = null;
    this.playback = null;
    this.ws = null;
    this.ready = false;
    this.resumeToken = "";
    this.windowMs = 0;
    this.resumeDeadline = 0;
    this.retries = 0;
    this.retryTimer = null;
    this.hangingUp = false;
    this.serverBye = null;
    this.clearedTurn = 0;
    this.clearSeq = 0;
    this.lastVoicedAt = -Infinity;
    this.speechEnd = null; // {at, source}: the end of the user's last utterance, not yet answered
    this.lastPositions = new Map(); // turn -> played_ms (resent after a resume)
  }

  async start() {
    setState("starting", "opening the microphone");
    // Created in the click's task: browsers let a user gesture start audio.
    let ctx = newContext(RATE);
    this.ctx = ctx;
    try {
      try {
        await this.openAudio(ctx);
      } catch (err) {
        // Some browsers cannot feed a microphone into a context at another rate than
        // the microphone's (Firefox): then the device's rate, and the server resamples.
        if (err.name !== "NotSupportedError" || !this.stream || this.hangingUp) throw err;
        ctx.close();
        ctx = newContext(0);
        this.ctx = ctx;
        await this.openAudio(ctx);
      }
    } catch (err) {
      this.teardown();
      if (!this.hangingUp) fail(err.code || "audio", err.message || String(err));
      return;
    }
    if (this.hangingUp) return;
    page.sampleRate = ctx.sampleRate;
    this.connect(false);
  }

  async openAudio(ctx) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw pageError(
        "mic_unavailable",
        window.isSecureContext
          ? "This browser gives pages no microphone."
          : "The microphone needs a secure page: open it over https, or on localhost.",
      );
    }
    const base = import.meta.url;
    await Promise.all([
      ctx.audioWorklet.addModule(new URL("./capture-worklet.js", base)),
      ctx.audioWorklet.addModule(new URL("./playback-worklet.js", base)),
    ]);
    if (!this.stream) {
      try {
        this.stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        });
      } catch (err) {
        throw micError(err);
      }
    }
    if (this.hangingUp) throw pageError("hung_up", "hung up");
    const source = ctx.createMediaStreamSource(this.stream);
    // No outputs: a sink the graph pulls by itself, wired to nothing audible.
    this.capture = new AudioWorkletNode(ctx, "rspp-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { frameMs: FRAME_MS },
    });
    this.capture.port.onmessage = (e) => this.onMic(e.data);
    source.connect(this.capture);
    this.playback = new AudioWorkletNode(ctx, "rspp-playback", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: {
        capacityS: 30,
        playoutMs: PLAYOUT_MS ?? (ctx.sampleRate === 16000 ? 0 : 20),
      },
    });
    this.playback.port.onmessage = (e) => this.onPlayback(e.data);
    this.playback.connect(ctx.destination);
    await ctx.resume();
  }

  // -- the socket ---------------------------------------------------------------------

  connect(resume) {
    setState(resume ? "reconnecting" : "connecting", resume ? `try ${this.retries}` : "");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/call`);
    ws.binaryType = "arraybuffer";
    const attempt = { opened: false, resume };
    this.ws = ws;
    ws.onopen = () => {
      attempt.opened = true;
      const format = { sample_rate: this.ctx.sampleRate, channels: 1, encoding: "pcm16" };
      ws.send(
        JSON.stringify({
          kind: "call.hello",
          protocol: PROTOCOL,
          abi: ABI,
          token: TOKEN,
          pipeline: PIPELINE,
          input: format,
          output: format,
          resume: resume ? this.resumeToken : "",
          last_pos: resume ? page.lastPos : null,
          last_seq: resume ? page.lastSeq : null,
        }),
      );
    };
    ws.onmessage = (e) => {
      if (ws !== this.ws) return;
      if (typeof e.data === "string") this.onText(e.data);
      else this.onAudio(e.data);
    };
    ws.onclose = (e) => this.onClose(ws, attempt, e);
  }

  send(message) {
    const ws = this.ws;
    if (!ws || !this.ready || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  async onClose(ws, attempt, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    const wasReady = this.ready;
    this.ready = false;
    const { code, reason } = event;
    page.closes.push({ code, reason, at: performance.now() });
    if (this.hangingUp) return;
    if (this.serverBye !== null || code === 1000) {
      this.teardown();
      const why = this.serverBye || reason;
      setState("ended", why ? `the call has ended (${why})` : "the call has ended");
      return;
    }
    const canResume = this.resumeToken && !FINAL_CLOSES.has(code);
    if (canResume) {
      const now = performance.now();
      if (wasReady || !this.resumeDeadline) this.resumeDeadline = now + this.windowMs;
      if (now < this.resumeDeadline) {
        const delay = Math.min(2000, 200 * 2 ** this.retries);
        this.retries++;
        setState("reconnecting", `connection lost (${code}); retrying in ${delay} ms`);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          if (!this.hangingUp) this.connect(true);
        }, delay);
        return;
      }
    }
    this.teardown();
    if (!attempt.opened && !page.session) {
      // The upgrade never happened: is the server down, or did it refuse the WebSocket?
      const alive = await fetch("/healthz", { cache: "no-store" }).then(
        (r) => r.ok,
        () => false,
      );
      if (!alive) {
        fail(code, reason, "The server is unreachable (is `rspp serve` running?).");
      } else {
        fail(code, reason, "The server refused the call's WebSocket (origin not allowed?).");
      }
      return;
    }
    if (canResume) {
      fail(code, reason, "The connection was lost and could not be resumed in time.");
      return;
    }
    fail(code, reason);
  }

  // -- server -> page -------------------------------------------------------------------

  advance(inc, pos) {
    const last = page.lastPos;
    if (last && (inc < last[0] || (inc === last[0] && pos <= last[1]))) return false;
    page.lastPos = [inc, pos];
    return true;
  }

  onAudio(buffer) {
    if (buffer.byteLength < 18) return;
    const view = new DataView(buffer);
    if (view.getUint8(0) !== 0x52 || view.getUint8(1) !== PROTOCOL) return;
    const turn = view.getUint32(4, true);
    const inc = view.getUint32(8, true);
    const pos = view.getUint32(12, true);
    const n = view.getUint16(16, true);
    if (pos && !this.advance(inc, pos)) {
      // (pos 0: the resampler's tail of a reply, never resent)
      page.framesDuplicate++; // resent after a reconnect: already have it
      return;
    }
    page.framesReceived++;
    if (n) {
      const words = UTF8.decode(new Uint8Array(buffer, 18, n));
      reply(turn).spoken += words;
    }
    if (turn <= this.clearedTurn) {
      page.framesLate++;
      return;
    }
    if (buffer.byteLength === 18 + n) {
      page.framesEmpty++;
      return;
    }
    const pcm = buffer.slice(18 + n); // a copy: PCM16 must start on an even offset
    if (this.playback) this.playback.port.postMessage({ type: "frame", turn, pcm }, [pcm]);
  }

  onText(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    const kind = msg.kind;
    // Only positioned events are deduplicated: text may carry its writer's inc without a pos.
    if (msg.pos && !this.advance(msg.inc || 0, msg.pos)) return;
    if (msg.seq) {
      // Text's incarnation: its writer's where the server says (a cluster gateway does),
      // else the one of the last positioned event.
      const inc = msg.inc || (page.lastPos ? page.lastPos[0] : 0);
      const last = page.lastSeq;
      if (!last || inc > last[0] || (inc === last[0] && msg.seq > last[1])) {
        page.lastSeq = [inc, msg.seq];
      }
    }
    const now = performance.now();
    page.events.push({ kind, turn: msg.turn, at: now });
    if (page.events.length > MAX_EVENTS) page.events.splice(0, page.events.length - MAX_EVENTS);
    switch (kind) {
      case "call.ready":
        this.onReady(msg);
        break;
      case "call.bye":
        this.serverBye = msg.reason || "";
        break;
      case "call.latency":
        latencyRow(msg.turn).server = msg.values || {};
        break;
      case "vad.speech_end":
        this.onSpeechEnd(now);
        break;
      case "asr.partial":
        userLine(msg.turn, msg.text, false);
        break;
      case "asr.final":
        userLine(msg.turn, msg.text, true);
        break;
      case "llm.delta":
        reply(msg.turn).text += msg.text;
        break;
      case "turn.interrupted": {
        const r = page.replies.find((x) => x.turn === msg.turn);
        if (r) {
          r.interrupted = true;
          r.heard = msg.heard_text || "";
        }
        break;
      }
      case "turn.done": {
        const r = page.replies.find((x) => x.turn === msg.turn);
        if (r) r.done = true;
        break;
      }
      case "control.clear_buffer":
        this.onClear(msg.turn, now);
        break;
      case "error":
        page.errors.push({ code: msg.code, message: msg.message, source: msg.source, at: now });
        break;
      default:
        break;
    }
    render();
  }

  onReady(msg) {
    this.ready = true;
    this.resumeToken = msg.resume_token;
    this.windowMs = (msg.resume_window_s || 0) * 1000;
    this.resumeDeadline = 0;
    this.retries = 0;
    page.session = msg.session;
    page.pipeline = msg.pipeline;
    page.leadMs = msg.lead_ms;
    if (msg.resumed) {
      page.resumes++;
      // What was reported while the socket was down.
      for (const [turn, played_ms] of this.lastPositions) this.reportPosition(turn, played_ms);
    }
    setState("in-call", msg.resumed ? `resumed (${msg.missed || 0} missed)` : "");
  }

  onSpeechEnd(now) {
    // The user stopped talking a little before the server says so: its VAD waits out a
    // hangover (150-200 ms) and the event crosses the network. The page hears the
    // microphone itself, so the end of speech is the last loud frame it captured, if
    // there is one shortly before; otherwise the event's arrival (an upper bound).
    const voiced = this.lastVoicedAt;
    if (now - voiced <= SPEECH_END_LOOKBACK_MS) {
      this.speechEnd = { at: voiced, source: "mic" };
    } else {
      this.speechEnd = { at: now, source: "vad.speech_end" };
    }
  }

  onClear(turn, receivedAt) {
    if (turn > this.clearedTurn) this.clearedTurn = turn;
    const id = ++this.clearSeq;
    page.clears.push({
      id,
      turn,
      receivedAt, // performance.now() when the message arrived
      bufferedMsBefore: page.bufferedMs, // the worklet's last word on its level (<= 50 ms old)
      appliedAt: null, // when the worklet had emptied its buffer (message received)
      silentAt: null, // output time of the worklet's first render quantum after the flush
      silentReportedAt: null, // when the page learned of that quantum
      msToSilence: null, // silentAt - receivedAt
      outputLatencyMs: null, // the audio device's own latency (no page can take that back)
      droppedMs: null,
      bufferedMsAfter: null,
      stopped: null,
      samplesAfter: null, // samples that first quantum played (of newer turns only)
      staleAfter: null, // of them, samples of cleared turns (never)
    });
    if (this.playback) this.playback.port.postMessage({ type: "clear", turn, id });
  }

  // -- the worklets -> page ---------------------------------------------------------------

  onMic(d) {
    if (d.type !== "frame") return;
    const now = performance.now();
    page.micFrames++;
    page.micLevel = d.rms;
    page.micDb = d.rms > 0 ? 20 * Math.log10(d.rms) : -Infinity;
    if (d.peak > page.micPeak) page.micPeak = d.peak;
    if (page.micDb > VOICED_DB) this.lastVoicedAt = now;
    const ws = this.ws;
    if (this.ready && ws && ws.readyState === WebSocket.OPEN) {
      if (ws.bufferedAmount > MAX_SOCKET_BACKLOG) {
        page.micFramesDropped++;
      } else {
        ws.send(d.pcm);
        page.micFramesSent++;
      }
    }
    renderMeter();
  }

  onPlayback(d) {
    switch (d.type) {
      case "start": {
        const playedAt = this.outputTime(d.at);
        const row = latencyRow(d.turn);
        row.firstPlayedAt = playedAt;
        const end = this.speechEnd;
        if (end && end.at <= playedAt) {
          row.from = end.source;
          row.speechEndAt = end.at;
          row.heardMs = playedAt - end.at;
        }
        this.speechEnd = null;
        render();
        break;
      }
      case "position":
        this.reportPosition(d.turn, d.played_ms);
        break;
      case "cleared": {
        const entry = page.clears.find((c) => c.id === d.id);
        if (entry) {
          entry.appliedAt = performance.now();
          entry.droppedMs = d.droppedMs;
          entry.bufferedMsAfter = d.bufferedMs;
          // Where each cleared turn stopped (as reported: to 0.1 ms).
          entry.stopped = d.positions.map((p) => ({
            turn: p.turn,
            played_ms: roundMs(p.played_ms),
          }));
        }
        page.bufferedMs = d.bufferedMs;
        for (const p of d.positions) this.reportPosition(p.turn, p.played_ms);
        break;
      }
      case "silent": {
        const entry = page.clears.find((c) => c.id === d.id);
        if (entry) {
          entry.silentReportedAt = performance.now();
          entry.silentAt = this.outputTime(d.at);
          entry.msToSilence = entry.silentAt - entry.receivedAt;
          entry.outputLatencyMs = (this.ctx.outputLatency || 0) * 1000; // of it, the device's
          entry.samplesAfter = d.samples;
          entry.staleAfter = d.stale;
          entry.bufferedMsAfter = d.bufferedMs;
        }
        render();
        break;
      }
      case "stats":
        page.bufferedMs = d.bufferedMs;
        page.framesPlayed = d.framesPlayed;
        page.underruns = d.underruns;
        renderMeter();
        break;
      default:
        break;
    }
  }

  reportPosition(turn, played_ms) {
    const ms = roundMs(played_ms);
    this.lastPositions.set(turn, ms);
    if (this.lastPositions.size > 8) {
      this.lastPositions.delete(this.lastPositions.keys().next().value);
    }
    if (this.send({ kind: "playback.position", turn, played_ms: ms })) {
      page.positions.push({ turn, played_ms: ms, at: performance.now() });
      if (page.positions.length > MAX_EVENTS) page.positions.shift();
    }
  }

  // The performance.now() at which the sample rendered at context time `t` leaves the
  // audio device (getOutputTimestamp maps the context's clock to the page's).
  outputTime(t) {
    const ctx = this.ctx;
    const stamp = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (stamp && stamp.performanceTime > 0) {
      return stamp.performanceTime + (t - stamp.contextTime) * 1000;
    }
    return performance.now() + (t - ctx.currentTime + (ctx.outputLatency || 0)) * 1000;
  }

  // -- page -> server -------------------------------------------------------------------

  say(text) {
    if (!this.send({ kind: "user.text", text })) return false;
    // A typed turn ends when it is sent.
    this.speechEnd = { at: performance.now(), source: "typed" };
    const line = { turn: null, text, final: true, typed: true };
    page.transcript.push(line);
    page.log.push({ who: "user", item: line });
    render();
    return true;
  }

  hangUp() {
    this.hangingUp = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (this.ready) ws.send(JSON.stringify({ kind: "call.bye", reason: "hang_up" }));
      setTimeout(() => ws.close(1000, "hang up"), 300);
    } else if (ws) {
      ws.close();
    }
    this.ws = null;
    this.ready = false;
    this.teardown();
    setState("ended", "you hung up");
  }

  teardown() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.capture) this.capture.port.postMessage({ type: "stop" });
    if (this.ctx && this.ctx.state !== "closed") this.ctx.close();
    this.stream = null;
    this.capture = null;
    this.playback = null;
  }
}

// -- the page's model -------------------------------------------------------------------

function reply(turn) {
  let r = page.replies.find((x) => x.turn === turn);
  if (!r) {
    r = { turn, text: "", spoken: "", heard: null, interrupted: false, done: false };
    page.replies.push(r);
    page.log.push({ who: "bot", item: r });
  }
  return r;
}

function userLine(turn, text, final) {
  // Partials replace each other until the final replaces the last of them.
  const last = page.transcript[page.transcript.length - 1];
  if (last && !last.final && !last.typed) {
    if (!text && final) {
      // Nothing was said after all (a cough, a noise): the partial goes.
      page.transcript.pop();
      page.log = page.log.filter((entry) => entry.item !== last);
      return;
    }
    last.text = text;
    last.final = final;
    last.turn = turn;
    return;
  }
  if (!text) return;
  const line = { turn, text, final, typed: false };
  page.transcript.push(line);
  page.log.push({ who: "user", item: line });
}

function latencyRow(turn) {
  let row = page.latency.find((r) => r.turn === turn);
  if (!row) {
    row = { turn, from: null, speechEndAt: null, firstPlayedAt: null, heardMs: null, server: null };
    page.latency.push(row);
    page.latency.sort((a, b) => a.turn - b.turn);
  }
  return row;
}

// An AudioContext at `rate` (0: the device's), inside the protocol's 8-96 kHz.
function newContext(rate) {
  const options = { latencyHint: "interactive" };
  if (rate >= 8000 && rate <= 96000) {
    try {
      return new AudioContext({ ...options, sampleRate: rate });
    } catch {
      // a rate this browser does not offer: its own
    }
  }
  const ctx = new AudioContext(options);
  if (ctx.sampleRate >= 8000 && ctx.sampleRate <= 96000) return ctx;
  ctx.close();
  return new AudioContext({ ...options, sampleRate: 48000 });
}

function roundMs(ms) {
  return Math.round(ms * 10) / 10;
}

function pageError(code, message) {
  const err = new Error(message);
  err.code = code;
  return err;
}

function micError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return pageError(
        "mic_denied",
        "Microphone permission denied: allow the microphone for this page " +
          "(the icon in the address bar), then press Call again.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return pageError("mic_missing", "No microphone was found.");
    case "NotReadableError":
    case "AbortError":
      return pageError("mic_busy", "The microphone could not be opened (in use elsewhere?).");
    default:
      return pageError("mic", `The microphone failed: ${err && err.message}`);
  }
}

function describeClose(code, reason) {
  const known = CLOSE_CODES[code] || "the connection closed";
  return `Close ${code}: ${known}.` + (reason ? ` The server said: “${reason}”.` : "");
}

function fail(code, reason, message) {
  const text =
    typeof code === "number"
      ? [message, describeClose(code, reason)].filter(Boolean).join(" ")
      : reason;
  page.error = { code, reason: reason || "", message: text };
  setState("error", typeof code === "number" ? `close ${code}` : code);
}

// -- the UI -----------------------------------------------------------------------------

let call = null;

function setState(state, detail = "") {
  page.state = state;
  page.detail = detail;
  if (state !== "error") page.error = null;
  render();
}

function startCall() {
  const lists = ["transcript", "replies", "latency", "clears", "positions", "errors", "closes"];
  for (const key of [...lists, "events", "log"]) page[key] = [];
  Object.assign(page, {
    session: null, resumes: 0, lastPos: null, lastSeq: null, micPeak: 0, micFrames: 0, micFramesSent: 0,
    micFramesDropped: 0, framesReceived: 0, framesPlayed: 0, framesDuplicate: 0, framesEmpty: 0,
    framesLate: 0, underruns: 0, bufferedMs: 0,
  });
  call = new Call();
  call.start();
}

function inCall() {
  return ["starting", "connecting", "in-call", "reconnecting"].includes(page.state);
}

ui.call.addEventListener("click", () => {
  if (inCall()) call.hangUp();
  else startCall();
});

ui.say.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (text && call && call.say(text)) ui.text.value = "";
});

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    draw();
  });
}

let meterQueued = false;
function renderMeter() {
  if (meterQueued) return;
  meterQueued = true;
  requestAnimationFrame(() => {
    meterQueued = false;
    drawMeter();
  });
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawMeter() {
  const db = page.micDb;
  const fraction = Number.isFinite(db) ? Math.min(1, Math.max(0, (db + 60) / 60)) : 0;
  ui.micLevel.style.width = `${(fraction * 100).toFixed(1)}%`;
  ui.micLevel.classList.toggle("voiced", db > VOICED_DB);
  ui.micDb.textContent = Number.isFinite(db) ? `${db.toFixed(0)} dB` : "– dB";
  ui.buffered.textContent = page.bufferedMs.toFixed(0);
  ui.frames.textContent = `${page.framesPlayed} / ${page.framesReceived}`;
  ui.underruns.textContent = String(page.underruns);
}

function draw() {
  const label = page.detail ? `${page.state}: ${page.detail}` : page.state;
  const inCallHere = page.state === "in-call" && page.session;
  ui.state.textContent = inCallHere ? `${label} · ${page.pipeline}` : label;
  ui.state.dataset.state = page.state;
  ui.state.className = `state ${page.state}`;
  ui.server.textContent = `server: ${page.server}`;
  ui.server.dataset.server = page.server;
  ui.call.disabled = false;
  ui.call.textContent = inCall() ? "Hang up" : "Call";
  ui.call.classList.toggle("hangup", inCall());
  const talking = page.state === "in-call";
  ui.text.disabled = !talking;
  ui.send.disabled = !talking;

  ui.error.hidden = !page.error;
  ui.error.textContent = page.error ? page.error.message : "";

  drawMeter();
  drawLog();
  drawLatency();
  drawClears();
}

function drawLog() {
  const items = page.log.slice(-80).map(({ who, item }) => {
    const li = el("li", who);
    if (who === "user") {
      li.append(el("span", "who", item.typed ? "you (typed)" : "you"));
      li.append(el("span", item.final ? "text final" : "text partial", item.text));
    } else {
      li.append(el("span", "who", `bot · turn ${item.turn}`));
      const body = el("span", "text");
      if (item.interrupted) {
        const heard = item.heard || "";
        const rest = item.text.startsWith(heard) ? item.text.slice(heard.length) : item.text;
        if (heard) body.append(el("span", "heard", heard));
        if (rest) body.append(el("s", "unheard", rest));
        li.append(body, el("span", "badge", "interrupted"));
      } else {
        body.textContent = item.text;
        li.append(body);
      }
    }
    return li;
  });
  for (const e of page.errors.slice(-5)) {
    items.push(el("li", "notice", `server error ${e.code}: ${e.message}`));
  }
  ui.log.replaceChildren(...items);
}

// The server's numbers worth a column (docs: rspp/kernel/latency.py); the rest in a tooltip.
const SERVER_COLUMNS = ["v2v_ms", "vad_ms", "asr_ms", "endpoint_ms", "llm_ttft_ms", "tts_ttfa_ms"];

function drawLatency() {
  ui.latencyHead.replaceChildren(
    el("th", "", "turn"),
    el("th", "", "from"),
    el("th", "", "heard"),
    ...SERVER_COLUMNS.map((k) => el("th", "server", k.replace(/_ms$/, ""))),
  );
  const fmt = (v) => (typeof v === "number" ? v.toFixed(0) : "–");
  ui.latency.replaceChildren(
    ...page.latency.map((row) => {
      const tr = el("tr");
      const server = row.server || {};
      tr.title = Object.entries(server)
        .map(([k, v]) => `${k}: ${typeof v === "number" ? Math.round(v * 10) / 10 : v}`)
        .join("\n");
      tr.append(el("td", "", String(row.turn)), el("td", "", row.from || "–"));
      tr.append(el("td", "heard", fmt(row.heardMs)));
      for (const k of SERVER_COLUMNS) tr.append(el("td", "server", fmt(server[k])));
      return tr;
    }),
  );
}

function drawClears() {
  ui.clears.replaceChildren(
    ...page.clears.map((c) => {
      const ms = (v) => (typeof v === "number" ? `${v.toFixed(1)} ms` : "…");
      return el(
        "li",
        "",
        `turn ${c.turn}: silence after ${ms(c.msToSilence)}` +
          ` (dropped ${ms(c.droppedMs)} of buffered audio; ${ms(c.bufferedMsAfter)} left)`,
      );
    }),
  );
}

async function pollServer() {
  let ready = false;
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    page.server = r.ok ? "ready" : "loading models";
    ready = r.ok;
  } catch {
    page.server = "unreachable";
  }
  render();
  if (!ready) setTimeout(pollServer, 2000);
}

// -- the debug object -------------------------------------------------------------------

window.rspp = Object.assign(page, {
  call: () => (inCall() ? false : (startCall(), true)),
  hangUp: () => call && inCall() && (call.hangUp(), true),
  say: (text) => Boolean(call && call.say(text)),
  interrupt: () => Boolean(call && call.send({ kind: "control.interrupt" })),
  // Close the socket as a network failure would (the page resumes the call).
  dropConnection: () => Boolean(call && call.ws && (call.ws.close(4000, "dropped"), true)),
  snapshot: () => JSON.parse(JSON.stringify(page, (k, v) => (k === "log" ? undefined : v))),
});

if (!TOKEN) {
  page.error = {
    code: "no_token",
    reason: "",
    message: "No token in this page's address: open the link `rspp serve` printed (…/?token=…).",
  };
}
ui.call.disabled = false;
render();
pollServer();
