// The dashboard's only script: the copy button, and the playground's streamed request.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const note = button.parentElement.querySelector(".copied");
  field.select();
  const done = () => { if (note) note.textContent = "Copied."; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});

// Each SSE event's JSON payload, as events arrive.
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

// The text an event adds: chat chunks carry deltas, Responses events carry output_text deltas.
function textOf(api, event) {
  if (event.error) throw new Error(event.error.message || "the stream failed");
  if (api === "chat") return (event.choices && event.choices[0] && event.choices[0].delta.content) || "";
  if (event.type === "response.failed") throw new Error(event.response.error?.message || "the response failed");
  return event.type === "response.output_text.delta" ? event.delta : "";
}

const playground = document.getElementById("playground");
if (playground) {
  playground.addEventListener("submit", async (event) => {
    event.preventDefault();
    const output = document.getElementById("pg-output");
    const status = document.getElementById("pg-status");
    const api = playground.querySelector("input[name=pg-api]:checked").value;
    const model = document.getElementById("pg-model").value;
    const message = document.getElementById("pg-message").value;
    const body = api === "chat"
      ? { model, stream: true, messages: [{ role: "user", content: message }] }
      : { model, stream: true, input: message };
    output.textContent = "";
    status.textContent = "Sending…";
    try {
      const response = await fetch(`${playground.dataset.apiBase}/${api === "chat" ? "chat/completions" : "responses"}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${document.getElementById("pg-key").value.trim()}` },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const failure = await response.json().catch(() => ({}));
        throw new Error(`${response.status}: ${failure.error ? failure.error.message : response.statusText}`);
      }
      status.textContent = "Streaming…";
      for await (const item of serverSentEvents(response)) output.textContent += textOf(api, item);
      status.textContent = "Done.";
    } catch (error) {
      status.textContent = `Failed: ${error.message}`;
    }
  });
}
