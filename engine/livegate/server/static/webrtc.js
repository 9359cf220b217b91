"use strict";
// The playground's WebRTC transport: the browser's own RTCPeerConnection against livegate's
// /v1/realtime/calls, the way OpenAI's WebRTC guide calls the Realtime API. The microphone goes as an Opus
// track and the answer comes back as one (livegate plays it, so no audio deltas arrive); the JSON events
// travel on the `oai-events` data channel. It registers itself in the page's transports (playground.html):
// open(url, secret, on) -> {send, close, open, media}. Meters: stats.sentMs from the sender's RTP
// statistics, stats.playedMs from the answer's audible 20 ms slices.

(window.playgroundTransports = window.playgroundTransports || {}).webrtc = {
  label: "WebRTC",
  open(url, secret, on) {
    const model = new URL(url).searchParams.get("model");
    const pc = new RTCPeerConnection();
    const call = {id: null, meters: null, audio: new Audio(), ended: false};
    call.audio.autoplay = true;
    pc.ontrack = (event) => {
      call.audio.srcObject = event.streams[0];
      call.meters = meter(event.streams[0], pc);
    };
    // The microphone joins once the call is up (replaceTrack needs no new offer), so nothing said while
    // connecting is lost; without one the call still carries typed messages and the answer's audio.
    const microphone = pc.addTransceiver("audio", {direction: "sendrecv"});
    const channel = pc.createDataChannel("oai-events");
    const end = (code, reason) => {
      if (call.ended) return;
      call.ended = true;
      if (call.meters) { clearInterval(call.meters.timer); call.meters.context.close(); }
      pc.getSenders().forEach((s) => s.track && s.track.stop());
      pc.close();
      on.close(code, reason);
    };
    channel.onopen = async () => {
      try {
        const mic = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: true}});
        await microphone.sender.replaceTrack(mic.getTracks()[0]);
      } catch (e) {
        notice("No microphone (" + e.name + "): type a message below; answers still play and show here.");
      }
      on.open();
    };
    channel.onmessage = (message) => on.event(JSON.parse(message.data));
    channel.onclose = () => end(1000, "call ended");
    pc.onconnectionstatechange = () => { if (pc.connectionState === "failed") end(1006, "connection failed"); };
    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      // The model goes with the offer (the form's `session`), as OpenAI's calls API takes it; the page's
      // session.update follows on the data channel.
      const form = new FormData();
      form.set("sdp", pc.localDescription.sdp);
      form.set("session", JSON.stringify({type: "realtime", model}));
      const reply = await fetch("/v1/realtime/calls", {method: "POST", body: form,
        headers: {"Authorization": "Bearer " + secret}});
      if (reply.status !== 201) {
        const error = (await reply.json()).error;
        on.event({type: "error", error});
        return end(4000 + reply.status, "refused: " + reply.status + " " + error.message);
      }
      call.id = (reply.headers.get("Location") || "").split("/").pop();
      await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
    })().catch((e) => end(1006, e.message));
    return {
      media: true,
      get open() { return channel.readyState === "open"; },
      send: (event) => channel.send(JSON.stringify(event)),
      close: async () => {
        if (call.id) {  // livegate ends the session; closing the peer connection alone would do too
          await fetch("/v1/realtime/calls/" + call.id + "/hangup", {method: "POST",
            headers: {"Authorization": "Bearer " + secret}}).catch(() => {});
        }
        end(1000, "hung up");
      },
    };
  },
};

function meter(stream, pc) {
  // Counts the answer's audible 20 ms slices (the page's speaker meter); WebAudio hears what the element plays.
  const context = new AudioContext(), analyser = context.createAnalyser(), data = new Float32Array(960);
  context.createMediaStreamSource(stream).connect(analyser);
  analyser.fftSize = 1024;
  const timer = setInterval(async () => {
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    if (Math.sqrt(sum / data.length) > 0.02) { stats.playedMs += 20; $("played").textContent = stats.playedMs; }
    const report = pc.connectionState === "closed" ? null : await pc.getStats();
    report && report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "audio") { stats.sentMs = s.packetsSent * 20; $("sent").textContent = stats.sentMs; }
    });
  }, 20);
  return {context, timer};
}
