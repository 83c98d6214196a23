// The page of `python -m fer_keras.serve`: send a photo (a file, a dropped file or a webcam frame) to
// POST api/predict?gradcam=1, then draw each face's box on the photo, its seven probabilities as bars
// and its Grad-CAM overlay. <body data-state> is idle, busy, done or error (tests wait on it).
"use strict";

const $ = (selector) => document.querySelector(selector);
const els = {
  info: $("#model-info"), file: $("#file"), status: $("#status"), result: $("#result"),
  img: $("#photo-img"), boxes: $("#boxes"), faces: $("#faces"), note: $("#gradcam-note"),
  video: $("#camera"), start: $("#camera-start"), snap: $("#camera-snap"), stop: $("#camera-stop"),
  template: $("#face-template"),
};
let info = { classes: ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"], max_upload_bytes: null };
let latest = 0; // number of the latest request: answers to older ones are dropped
let photoUrl = null;
let stream = null;

function setStatus(text, state) {
  els.status.textContent = text;
  els.status.className = state === "busy" || state === "error" ? state : "";
  document.body.dataset.state = state;
}

function percent(p, digits = 1) {
  return `${(100 * p).toFixed(digits)}%`;
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(bytes < 1048576 ? 2 : 1)} MB`;
}

async function loadInfo() {
  try {
    const response = await fetch("api/info");
    info = await response.json();
    const cam = info.gradcam ? info.gradcam_note : `no Grad-CAM (${info.gradcam_note})`;
    els.info.textContent = `Model: ${info.model}. ${cam}. Largest upload: ${megabytes(info.max_upload_bytes)}.`;
  } catch (error) {
    els.info.textContent = "The server did not answer: is python -m fer_keras.serve still running?";
  }
}

async function send(blob, name) {
  const number = ++latest;
  if (info.max_upload_bytes && blob.size > info.max_upload_bytes) {
    setStatus(`${name} is too large (${megabytes(blob.size)}): the server's upload limit is `
              + `${info.max_upload_bytes.toLocaleString("en")} bytes (--max-upload-mb).`, "error");
    return;
  }
  showPhoto(blob);
  els.result.hidden = true;
  setStatus(`Looking for faces in ${name}…`, "busy");
  const form = new FormData();
  form.append("file", blob, name);
  const started = performance.now();
  let answer;
  try {
    const response = await fetch("api/predict?gradcam=1", { method: "POST", body: form });
    answer = await response.json().catch(() => ({ error: `the server answered ${response.status} ${response.statusText}` }));
    if (!response.ok && !answer.error) answer = { error: `the server answered ${response.status}` };
  } catch (error) {
    answer = { error: `the request failed (${error.message}): is the server still running?` };
  }
  if (number !== latest) return;
  if (answer.error) {
    setStatus(`${name}: ${answer.error}`, "error");
    return;
  }
  await imageReady();
  if (number !== latest) return;
  render(answer);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const n = answer.faces.length;
  setStatus(n ? `${n} face${n > 1 ? "s" : ""} found in ${name} (${seconds} s).`
              : `No face found in ${name}. Faces should be upright, frontal and at least 24 pixels wide.`, "done");
}

function showPhoto(blob) {
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(blob);
  els.img.src = photoUrl;
}

function imageReady() {
  if (els.img.complete && els.img.naturalWidth) return Promise.resolve();
  return new Promise((resolve) => {
    els.img.addEventListener("load", resolve, { once: true });
    els.img.addEventListener("error", resolve, { once: true });
  });
}

function render(answer) {
  const { width, height } = answer.image;
  els.boxes.replaceChildren();
  els.faces.replaceChildren();
  answer.faces.forEach((face, index) => {
    const [x, y, w, h] = face.box;
    const colour = `var(--${face.emotion}, #fff)`;
    const label = `${index + 1} · ${face.emotion} ${percent(face.probabilities[face.emotion], 0)}`;

    const box = document.createElement("div");
    box.className = "face-box";
    box.dataset.index = index;
    box.dataset.emotion = face.emotion;
    box.dataset.box = face.box.join(",");
    box.style.left = `${(100 * x) / width}%`;
    box.style.top = `${(100 * y) / height}%`;
    box.style.width = `${(100 * w) / width}%`;
    box.style.height = `${(100 * h) / height}%`;
    box.style.setProperty("--box", colour);
    if (y < 0.08 * height) box.classList.add("below");
    box.title = `Face ${index + 1}: ${face.emotion}`;
    const tag = document.createElement("span");
    tag.className = "label";
    tag.textContent = label;
    box.append(tag);
    els.boxes.append(box);

    const card = els.template.content.firstElementChild.cloneNode(true);
    card.dataset.index = index;
    card.dataset.emotion = face.emotion;
    card.style.setProperty("--box", colour);
    card.querySelector(".face-number").textContent = `Face ${index + 1}:`;
    card.querySelector(".face-emotion").textContent = `${face.emotion} (${percent(face.probabilities[face.emotion], 0)})`;
    const figure = card.querySelector(".gradcam-figure");
    if (face.gradcam) {
      const overlay = card.querySelector(".gradcam");
      overlay.src = face.gradcam;
      overlay.alt = `Grad-CAM of face ${index + 1} for ${face.gradcam_class}`;
      card.querySelector(".gradcam-figure figcaption").textContent = `Grad-CAM: where the model looked for ${face.gradcam_class}`;
    } else {
      figure.hidden = true;
    }
    const bars = card.querySelector(".bars");
    for (const name of info.classes) {
      const p = face.probabilities[name] ?? 0;
      const row = document.createElement("div");
      row.className = name === face.emotion ? "bar top" : "bar";
      row.dataset.class = name;
      row.setAttribute("role", "meter");
      row.setAttribute("aria-label", name);
      row.setAttribute("aria-valuemin", "0");
      row.setAttribute("aria-valuemax", "1");
      row.setAttribute("aria-valuenow", String(p));
      row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
      row.querySelector(".name").textContent = name;
      row.querySelector(".fill").style.width = percent(p, 2);
      row.querySelector(".fill").style.setProperty("--bar", `var(--${name})`);
      row.querySelector(".value").textContent = percent(p);
      bars.append(row);
    }
    for (const [element, other] of [[box, card], [card, box]]) {
      element.addEventListener("mouseenter", () => { element.classList.add("highlight"); other.classList.add("highlight"); });
      element.addEventListener("mouseleave", () => { element.classList.remove("highlight"); other.classList.remove("highlight"); });
    }
    els.faces.append(card);
  });
  const anyGradcam = answer.faces.some((face) => face.gradcam);
  els.note.textContent = answer.faces.length && !anyGradcam ? `No Grad-CAM overlay: ${info.gradcam_note}.` : "";
  els.note.hidden = !els.note.textContent;
  els.result.hidden = false;
}

// --- inputs --------------------------------------------------------------------------------------

els.file.addEventListener("change", () => {
  const file = els.file.files[0];
  if (file) send(file, file.name);
  els.file.value = ""; // choosing the same file again still uploads it
});

document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) document.body.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const file = [...(event.dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/")) ?? event.dataTransfer?.files[0];
  if (file) send(file, file.name);
});

async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    setStatus("This browser gives no webcam to this page: open it as http://127.0.0.1 or http://localhost "
              + "(browsers allow the webcam only there or over https).", "error");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
  } catch (error) {
    setStatus(`The webcam could not be opened: ${error.name === "NotAllowedError" ? "permission denied" : error.message}.`, "error");
    return;
  }
  els.video.srcObject = stream;
  els.video.hidden = false;
  await els.video.play();
  els.start.hidden = true;
  els.snap.hidden = false;
  els.stop.hidden = false;
  setStatus("Webcam on: press “Take the photo”.", "idle");
}

function stopCamera() {
  stream?.getTracks().forEach((track) => track.stop());
  stream = null;
  els.video.srcObject = null;
  els.video.hidden = true;
  els.start.hidden = false;
  els.snap.hidden = true;
  els.stop.hidden = true;
}

function snap() {
  const { videoWidth: width, videoHeight: height } = els.video;
  if (!width || !height) {
    setStatus("The webcam has not sent a picture yet: try again in a moment.", "error");
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(els.video, 0, 0, width, height);
  canvas.toBlob((blob) => send(blob, "the webcam photo"), "image/jpeg", 0.92);
}

els.start.addEventListener("click", startCamera);
els.stop.addEventListener("click", stopCamera);
els.snap.addEventListener("click", snap);

setStatus("", "idle");
loadInfo();
