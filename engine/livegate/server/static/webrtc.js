"use strict";
// The playground's WebRTC mode: the browser's own RTCPeerConnection against livegate's /v1/realtime/calls,
// the way OpenAI's WebRTC guide calls the Realtime API. The microphone goes as an Opus track, the answer
// comes back as one (livegate plays it, so no audio deltas arrive), and the JSON events travel on the
// `oai-events` data channel. It reuses the page's helpers (credential, handle, log, status, send, stats):
// the channel stands in for the page's WebSocket.
// Meters: stats.sentMs from the sender's RTP statistics, stats.playedMs from the answer's audible 20 ms.

let webrtcCall = null;

async function connectWebRTC() {
  $("connect").disabled = true;
  status("calling…");
  const secret = await credential($("key").value);
  const pc = new RTCPeerConnection();
  const call = webrtcCall = {pc, id: null, secret, meters: null, audio: new Audio()};
  call.audio.autoplay = true;
  pc.ontrack = (event) => {
    call.audio.srcObject = event.streams[0];
    call.meters = meter(event.streams[0]);
  };
  // The microphone joins once the call is up (replaceTrack needs no new offer), so nothing said while
  // connecting is lost.
  const microphone = pc.addTransceiver("audio", {direction: "sendrecv"});
  const channel = pc.createDataChannel("oai-events");
  ws = channel;  // the page's send() writes to the call's data channel
  channel.onopen = async () => {
    const mic = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: true}});
    await microphone.sender.replaceTrack(mic.getTracks()[0]);
    stats.connected = true;
    status("connected over WebRTC: speak");
    $("hangup").disabled = false;
  };
  channel.onmessage = (message) => handle(JSON.parse(message.data));
  channel.onclose = () => endWebRTC("call ended");
  pc.onconnectionstatechange = () => { if (pc.connectionState === "failed") endWebRTC("connection failed"); };
  await pc.setLocalDescription(await pc.createOffer());
  // The session goes with the offer (the form's `session`), as OpenAI's calls API takes it.
  const form = new FormData();
  form.set("sdp", pc.localDescription.sdp);
  form.set("session", JSON.stringify({type: "realtime", model: $("model").value,
    instructions: "You are a friendly voice assistant.",
    audio: {input: {transcription: {model: "whisper-1"}, turn_detection: {type: "server_vad"}}, output: {voice: "marin"}},
    tools: [{type: "function", name: "get_time", description: "The current time in the browser",
             parameters: {type: "object", properties: {}}}]}));
  const reply = await fetch("/v1/realtime/calls", {method: "POST", body: form,
    headers: {"Authorization": "Bearer " + secret}});
  if (reply.status !== 201) {
    const error = (await reply.json()).error;
    log({type: "error", error});
    return endWebRTC("refused: " + reply.status + " " + error.message);
  }
  call.id = (reply.headers.get("Location") || "").split("/").pop();
  await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
}

function meter(stream) {
  // Counts the answer's audible 20 ms slices (the page's speaker meter); WebAudio hears what the element plays.
  const context = new AudioContext(), analyser = context.createAnalyser(), data = new Float32Array(960);
  context.createMediaStreamSource(stream).connect(analyser);
  analyser.fftSize = 1024;
  const timer = setInterval(async () => {
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    if (Math.sqrt(sum / data.length) > 0.02) { stats.playedMs += 20; $("played").textContent = stats.playedMs; }
    const report = webrtcCall && await webrtcCall.pc.getStats();
    report && report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "audio") { stats.sentMs = s.packetsSent * 20; $("sent").textContent = stats.sentMs; }
    });
  }, 20);
  return {context, timer};
}

async function hangUpWebRTC() {
  const call = webrtcCall;
  if (call && call.id) {  // livegate ends the session; closing the peer connection alone would do too
    await fetch("/v1/realtime/calls/" + call.id + "/hangup", {method: "POST",
      headers: {"Authorization": "Bearer " + call.secret}}).catch(() => {});
  }
  endWebRTC("hung up");
}

function endWebRTC(why) {
  const call = webrtcCall;
  if (!call) return;
  webrtcCall = null;
  if (call.meters) { clearInterval(call.meters.timer); call.meters.context.close(); }
  call.pc.getSenders().forEach((s) => s.track && s.track.stop());
  call.pc.close();
  status("closed (" + why + ")");
  $("connect").disabled = false;
  $("hangup").disabled = true;
}
