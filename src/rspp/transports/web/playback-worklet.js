// The speaker side of a call: a ring buffer of bot audio, played in order, flushed at once.
//
// Runs on the audio rendering thread, which is the only place that knows what was actually
// played: a sample counts as played when it is written into an output render quantum, so
// the playback reports (`playback.position`) and the "heard" latency come from here, not
// from the socket. Samples are at the AudioContext's rate (the page asks the server for
// that rate in `call.hello.output`), so nothing is resampled here.
//
// The ring holds samples; beside it, a queue of segments (one per server frame: its turn
// and how many of its samples are left) says which reply each sample belongs to. Turns
// only grow along the queue, so a clear of turns <= T moves the read index past the
// leading segments of those turns: O(frames), no copying, before the next render quantum.
//
// Messages in:  {type: "frame", turn, pcm: ArrayBuffer (PCM16)}, {type: "clear", turn, id}.
//               (Hanging up closes the AudioContext, and the ring with it.)
// Messages out: "start" (the first sample of a turn was played), "position" (a turn's
//               played total: every 100 ms while it plays, when its audio runs out, when
//               the next turn starts, after a clear), "cleared" (a clear was applied),
//               "silent" (the first render quantum after a clear: what it played), "stats"
//               (buffer level, frames played, underruns), "overflow".

const REPORT_EVERY_S = 0.1;
// When the audio runs out, its final position is reported after at most this long (and
// never more often: a ring that starves every other quantum must not flood the socket).
const REPORT_IDLE_S = 0.02;
const STATS_EVERY_S = 0.05;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const seconds = (options.processorOptions && options.processorOptions.capacityS) || 30;
    this.capacity = Math.ceil(sampleRate * seconds);
    // The playout delay: after the ring ran dry (a turn's start, a gap), the first sample
    // waits this long for the next ones to arrive, so that frames that come in bursts play
    // without gaps. Bounded: it never adds more than this to when a reply is heard.
    const playoutMs = options.processorOptions && options.processorOptions.playoutMs;
    this.playoutS = (playoutMs || 0) / 1000;
    this.primed = false; // playing (false: holding the first samples for the playout delay)
    this.holdSince = -1; // context time the held samples began to wait
    this.ring = new Float32Array(this.capacity);
    this.read = 0; // index of the next sample to play
    this.size = 0; // samples held
    this.segments = []; // [{turn, left}] in ring order, from segmentHead
    this.segmentHead = 0;
    this.played = new Map(); // turn -> samples played (a total)
    this.started = new Set(); // turns whose first sample was played
    this.cleared = 0; // turns <= this were cleared: their late frames are dropped
    this.playing = 0; // the turn of the last sample played (0: none, or it was cleared)
    this.reportedSamples = -1; // the playing turn's total when last reported
    this.reportedAt = -1; // context time of that report
    this.starved = false; // the playing turn's audio ran out mid-quantum
    this.sinceStats = 0;
    this.framesPlayed = 0;
    this.framesDropped = 0;
    this.underruns = 0; // a turn's audio ran out, then more of it came (a gap was heard)
    this.pendingSilent = null; // a clear whose first quantum after it is still to be reported
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(msg) {
    if (msg.type === "frame") this.push(msg.turn, new Int16Array(msg.pcm));
    else if (msg.type === "clear") this.clear(msg.turn, msg.id);
  }

  push(turn, pcm) {
    if (turn <= this.cleared) {
      this.framesDropped++;
      return;
    }
    const n = pcm.length;
    if (n === 0) return;
    if (this.size + n > this.capacity) {
      this.framesDropped++;
      this.port.postMessage({ type: "overflow", turn, samples: n });
      return;
    }
    if (this.starved) {
      if (turn === this.playing) this.underruns++;
      this.starved = false;
    }
    let write = (this.read + this.size) % this.capacity;
    for (let i = 0; i < n; i++) {
      this.ring[write] = pcm[i] / 32768;
      if (++write === this.capacity) write = 0;
    }
    this.size += n;
    this.segments.push({ turn, left: n });
  }

  clear(turn, id) {
    if (turn > this.cleared) this.cleared = turn;
    let dropped = 0;
    const segments = this.segments;
    const unplayed = new Set(); // cleared turns none of whose audio was played
    while (this.segmentHead < segments.length && segments[this.segmentHead].turn <= turn) {
      const seg = segments[this.segmentHead];
      dropped += seg.left;
      if (!this.played.has(seg.turn)) unplayed.add(seg.turn);
      this.segmentHead++;
    }
    this.compact();
    this.read = (this.read + dropped) % this.capacity;
    this.size -= dropped;
    // Where each cleared turn stopped: the page reports it ("right after a clear").
    const positions = [];
    for (const [t, samples] of this.played) {
      if (t <= turn) {
        positions.push({ turn: t, played_ms: (samples * 1000) / sampleRate });
        this.played.delete(t);
      }
    }
    for (const t of unplayed) positions.push({ turn: t, played_ms: 0 });
    if (this.playing && this.playing <= turn) {
      this.playing = 0;
      this.starved = false;
    }
    if (this.size === 0) {
      this.primed = false;
      this.holdSince = -1;
    }
    this.port.postMessage({
      type: "cleared",
      id,
      turn,
      at: currentTime,
      droppedMs: (dropped * 1000) / sampleRate,
      bufferedMs: (this.size * 1000) / sampleRate,
      positions,
    });
    this.pendingSilent = { id, turn };
  }

  compact() {
    if (this.segmentHead > 256 && this.segmentHead * 2 > this.segments.length) {
      this.segments = this.segments.slice(this.segmentHead);
      this.segmentHead = 0;
    }
  }

  process(inputs, outputs) {
    const output = outputs[0];
    const out = output[0];
    const quantum = out.length;
    let i = 0;
    let stale = 0; // samples of cleared turns in this quantum (none, by construction)
    if (!this.primed && this.size > 0) {
      if (this.holdSince < 0) this.holdSince = currentTime;
      if (currentTime - this.holdSince >= this.playoutS - 0.5 / 1000) this.primed = true;
    }
    while (this.primed && i < quantum && this.size > 0) {
      const seg = this.segments[this.segmentHead];
      if (seg.turn !== this.playing) {
        if (this.playing) this.report(this.playing); // where the previous turn ended
        this.playing = seg.turn;
        this.reportedSamples = -1;
        this.reportedAt = currentTime;
        this.starved = false;
      }
      if (!this.started.has(seg.turn)) {
        this.started.add(seg.turn);
        this.port.postMessage({ type: "start", turn: seg.turn, at: currentTime + i / sampleRate });
      }
      if (seg.turn <= this.cleared) stale++;
      const k = Math.min(quantum - i, seg.left, this.capacity - this.read);
      out.set(this.ring.subarray(this.read, this.read + k), i);
      i += k;
      this.read = (this.read + k) % this.capacity;
      this.size -= k;
      seg.left -= k;
      this.played.set(seg.turn, (this.played.get(seg.turn) || 0) + k);
      if (seg.left === 0) {
        this.segmentHead++;
        this.framesPlayed++;
        this.compact();
      }
    }
    const played = i;
    if (i < quantum) out.fill(0, i);
    for (let c = 1; c < output.length; c++) output[c].set(out);

    if (this.playing) {
      const since = currentTime - this.reportedAt;
      if (this.size === 0) {
        if (played < quantum && played > 0) this.starved = true;
        this.primed = false;
        this.holdSince = -1;
        const total = this.played.get(this.playing) || 0;
        if (total !== this.reportedSamples && since >= REPORT_IDLE_S) this.report(this.playing);
      } else if (since >= REPORT_EVERY_S) {
        this.report(this.playing);
      }
    }
    if (this.pendingSilent) {
      this.port.postMessage({
        type: "silent",
        id: this.pendingSilent.id,
        turn: this.pendingSilent.turn,
        at: currentTime,
        samples: played,
        stale,
        bufferedMs: (this.size * 1000) / sampleRate,
      });
      this.pendingSilent = null;
    }
    this.sinceStats += quantum;
    if (this.sinceStats >= STATS_EVERY_S * sampleRate) {
      this.sinceStats = 0;
      this.postStats();
    }
    return true;
  }

  report(turn) {
    const samples = this.played.get(turn) || 0;
    this.reportedSamples = samples;
    this.reportedAt = currentTime;
    this.port.postMessage({ type: "position", turn, played_ms: (samples * 1000) / sampleRate });
  }

  postStats() {
    this.port.postMessage({
      type: "stats",
      bufferedMs: (this.size * 1000) / sampleRate,
      framesPlayed: this.framesPlayed,
      framesDropped: this.framesDropped,
      underruns: this.underruns,
    });
  }
}

registerProcessor("rspp-playback", PlaybackProcessor);
