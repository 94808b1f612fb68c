// The microphone side of a call: the AudioContext's samples -> PCM16 frames of 20 ms.
//
// Runs on the audio rendering thread. It does not resample: the page runs its AudioContext
// at the pipeline's rate (16 kHz; the browser converts from the microphone's rate itself)
// and announces that rate in `call.hello.input`; at any other rate the server resamples
// with soxr (docs/protocol.md: any rate from 8 to 96 kHz). A resampler here would be a
// worse one, on the thread that must never miss a deadline, and would gain nothing.
//
// Each frame is posted (its buffer transferred, not copied) with its level, so the page
// can draw the meter and see for itself when the user went quiet.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = (options.processorOptions && options.processorOptions.frameMs) || 20;
    this.frameSamples = Math.round((sampleRate * frameMs) / 1000);
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true; // nothing connected (yet)
    const channels = input.length;
    const length = input[0].length;
    for (let i = 0; i < length; i++) {
      let s = input[0][i];
      if (channels > 1) {
        for (let c = 1; c < channels; c++) s += input[c][i];
        s /= channels;
      }
      if (s > 1) s = 1;
      else if (s < -1) s = -1;
      const a = s < 0 ? -s : s;
      if (a > this.peak) this.peak = a;
      this.sumSquares += s * s;
      this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.frameSamples) this.flush(currentTime + (i + 1) / sampleRate);
    }
    return true;
  }

  flush(endTime) {
    const rms = Math.sqrt(this.sumSquares / this.frameSamples);
    const frame = this.frame;
    this.port.postMessage(
      { type: "frame", pcm: frame.buffer, rms, peak: this.peak, end: endTime },
      [frame.buffer],
    );
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }
}

registerProcessor("rspp-capture", CaptureProcessor);
