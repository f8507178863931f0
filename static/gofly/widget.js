/*
 * gofly visitor chat widget. Embed on any page with
 *   <script src="https://HOST/static/gofly/widget.js" data-site="SITE_KEY" async></script>
 * Wire protocol: docs/protocol.md. Everything it leaves on the host page is namespaced:
 * the `window.Gofly` global, one `#gofly-widget` host holding an open shadow root,
 * `gofly-` CSS classes and `gofly:<site>:` localStorage keys.
 */
(function () {
  "use strict";

  if (window.Gofly) return; // pasted twice: one widget is enough

  const script = document.currentScript || document.querySelector("script[data-site]");
  if (!script || !script.dataset.site) return;

  const SITE = script.dataset.site;
  const BASE = new URL(script.src, location.href).origin;
  const STORE = "gofly:" + SITE + ":";
  const PING_MS = 25000;
  const TYPING_EVERY_MS = 2000;
  const TYPING_IDLE_MS = 4000;
  const AGENT_TYPING_MS = 5000;
  const VISITOR = { kind: "visitor" };
  const CLIP = "M20 11l-8 8a5 5 0 0 1-7-7l8-8a3.3 3.3 0 0 1 5 5l-8 8a1.6 1.6 0 0 1-2-2l7-7";

  const STRINGS = {
    en: {
      title: "Chat",
      open: "Open chat",
      close: "Close",
      placeholder: "Type a message…",
      send: "Send",
      attach: "Attach",
      connecting: "Connecting…",
      reconnecting: "Reconnecting…",
      offline: "Chat is unavailable right now, retrying…",
      refused: "This chat is unavailable.",
      typing: "Agent is typing…",
      sending: "Sending…",
      retrying: "Not sent, retrying",
      uploading: "Uploading…",
      uploadFailed: "Upload failed",
      queue: "You are number {n} in line. An agent will be with you shortly.",
      rate: "How did we do?",
      rateComment: "Anything to add? (optional)",
      rateSend: "Send rating",
      rated: "Thank you for your feedback!",
      closed: "We are closed right now. Leave a message and we will get back to you.",
      nobodyOnline: "Nobody is online right now. Leave a message and we will get back to you.",
      name: "Your name",
      email: "Your email",
      message: "Your message",
      leave: "Send message",
      left: "Thank you! We got your message and will answer as soon as we can.",
      leaveFailed: "The message could not be sent; try again.",
      bot: "Bot",
    },
    zh: {
      title: "在线客服",
      open: "打开聊天",
      close: "关闭",
      placeholder: "输入消息…",
      send: "发送",
      attach: "附件",
      connecting: "连接中…",
      reconnecting: "正在重新连接…",
      offline: "暂时无法连接客服，正在重试…",
      refused: "此聊天不可用。",
      typing: "客服正在输入…",
      sending: "发送中…",
      retrying: "未发送，正在重试",
      uploading: "上传中…",
      uploadFailed: "上传失败",
      queue: "您正在排队，当前第 {n} 位，客服马上就来。",
      rate: "您对本次服务满意吗？",
      rateComment: "还有什么想说的？（可选）",
      rateSend: "提交评价",
      rated: "感谢您的反馈！",
      closed: "现在不是营业时间。请留言，我们会尽快回复您。",
      nobodyOnline: "现在没有客服在线。请留言，我们会尽快回复您。",
      name: "您的姓名",
      email: "您的邮箱",
      message: "留言内容",
      leave: "提交留言",
      left: "谢谢！我们已收到您的留言，会尽快回复。",
      leaveFailed: "留言未能发送，请重试。",
      bot: "智能客服",
    },
  };

  let t = STRINGS.en;
  let ui = null; // the DOM nodes, built once the first session answer (or failure) is in
  let wsUrl = null;
  let token = null; // the visitor token: uploads and file links carry it
  let socket = null;
  let ready = false;
  let attempt = 0; // reconnect attempts since the last `ready`
  let retryTimer = 0;
  let pingTimer = 0;
  let conversation = null;
  let lastSeq = 0;
  let upTo = 0; // every seq up to this one is shown; a resume asks for what follows it
  let seen = new Set(); // seqs of the current conversation already shown
  let resumedOnce = false; // unread counting starts after the first history replay
  let replaying = false; // between `resume` and `resumed`: one read frame at the end, not many
  let readSent = 0;
  let unread = 0;
  let isOpen = false;
  let flushTimer = 0;
  let flushDelay = 2000;
  let typingSentAt = 0;
  let typingOn = false;
  let typingIdle = 0;
  let typingDue = 0;
  let agentTypingTimer = 0;
  let stick = true; // the message list follows its bottom
  let lastTop = 0;
  let blocked = false; // refused for good: no reconnecting, no composer
  let leaveId = null; // client_id of the left message being sent; kept across retries

  // Storage ---------------------------------------------------------------------------------

  // localStorage throws when disabled (private modes, sandboxed frames); the widget then works
  // for this page view only.
  function load(name, fallback) {
    try {
      const raw = localStorage.getItem(STORE + name);
      return raw ? JSON.parse(raw) : fallback;
    } catch (e) {
      return fallback;
    }
  }

  function save(name, value) {
    try {
      if (value == null) localStorage.removeItem(STORE + name);
      else localStorage.setItem(STORE + name, JSON.stringify(value));
    } catch (e) {
      /* see load() */
    }
  }

  // The outbox is re-read on every change because another tab of the same site shares it.
  function outbox() {
    const items = load("outbox", []);
    return Array.isArray(items) ? items : [];
  }

  function dropFromOutbox(clientId) {
    save("outbox", outbox().filter((item) => item.client_id !== clientId));
  }

  // randomUUID exists only in secure contexts; a shop served over plain http gets random hex.
  function newId() {
    if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Session ---------------------------------------------------------------------------------

  async function requestSession() {
    const response = await fetch(BASE + "/api/widget/v1/sessions", {
      method: "POST",
      credentials: "omit",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        site: SITE,
        visitor_id: load("visitor", undefined),
        page_url: location.href,
        referrer: document.referrer,
      }),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw Object.assign(new Error(data.detail || response.statusText), data, {
        status: response.status,
      });
    }
    save("visitor", data.visitor_id);
    return data;
  }

  function startSession() {
    requestSession().then(onSession, onSessionError);
  }

  function onSession(data) {
    wsUrl = data.ws_url;
    token = data.token;
    if (!ui) buildUi(data.site);
    // Links to files already shown get the renewed token (an expired one would 404).
    ui.list.querySelectorAll("a[data-url]").forEach((a) => (a.href = fileUrl(a.dataset.url)));
    applySite(data.site);
    // Unavailable: the form replaces the composer; the socket still brings history and replies.
    showLeaveForm(data.available === false ? data.unavailable_reason : null);
    connect();
  }

  function onSessionError(err) {
    if (!ui) buildUi(null);
    if (err.code === "invalid" && load("visitor", null)) {
      save("visitor", null); // a mangled stored id: start over as a new visitor
      return later(startSession);
    }
    if (err.code === "blocked") return refuse(err.message);
    // A 4xx answer (unknown site, origin not allowed) will not change by retrying.
    if (err.status && err.status < 500) return showStatus(err.message);
    showStatus(t.offline);
    later(startSession);
  }

  // Socket ----------------------------------------------------------------------------------

  function connect() {
    clearTimeout(retryTimer);
    const ws = new WebSocket(wsUrl);
    socket = ws;
    ws.onmessage = (event) => onFrame(event.data);
    ws.onclose = (event) => onClose(ws, event.code);
  }

  function onClose(ws, code) {
    if (ws !== socket) return;
    socket = null;
    ready = false;
    replaying = false;
    clearInterval(pingTimer);
    showAgentTyping(false);
    if (blocked) return; // the error frame before the close said why
    if (code === 4403) return showStatus(t.refused);
    showStatus(t.reconnecting);
    // 4401: the token expired or was revoked; a fresh session answer carries a new one.
    later(code === 4401 ? startSession : connect);
  }

  // Exponential backoff (0.5 s doubling to 15 s) with jitter, so a server restart is not
  // met by every open page reconnecting in the same instant.
  function later(fn) {
    const cap = Math.min(15000, 500 * 2 ** attempt++);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(fn, cap / 2 + (Math.random() * cap) / 2);
  }

  function send(frame) {
    if (!ready || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  const HANDLERS = {
    ready: onReady,
    message: onMessage,
    ack: onAck,
    error: onError,
    resumed: onResumed,
    typing: onTyping,
    queue: onQueue,
    conversation: onConversation,
    rated: onRated,
  };

  function onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      return;
    }
    const handler = frame && HANDLERS[frame.type];
    if (handler) handler(frame);
  }

  function onReady(frame) {
    ready = true;
    attempt = 0;
    showStatus("");
    pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
    if (frame.conversation) {
      useConversation(frame.conversation.id);
      showQueue(frame.conversation.queue_position);
      replaying = send({ type: "resume", conversation: conversation, after_seq: upTo });
    } else {
      resumedOnce = true;
    }
    flushOutbox();
  }

  function onResumed() {
    resumedOnce = true;
    replaying = false;
    if (isOpen) markRead();
  }

  // A new conversation (the visitor's first message, or another tab's) replaces the history
  // shown; messages still pending stay.
  function useConversation(id) {
    if (id === conversation) return;
    if (conversation !== null) {
      ui.list.querySelectorAll(".gofly-msg[data-seq]").forEach((node) => node.remove());
    }
    conversation = id;
    lastSeq = 0;
    upTo = 0;
    readSent = 0;
    seen = new Set();
  }

  function remember(seq) {
    seen.add(seq);
    lastSeq = Math.max(lastSeq, seq);
    while (seen.has(upTo + 1)) upTo++;
  }

  // Seqs have no gaps, so a hole means a live frame was lost on the way (say, while the
  // server's Redis was down): fetch what is missing instead of waiting for a reconnect.
  function fillHoles() {
    if (!replaying && conversation !== null && upTo < lastSeq) {
      replaying = send({ type: "resume", conversation: conversation, after_seq: upTo });
    }
  }

  function onMessage(message) {
    if (conversation !== null && message.conversation < conversation) return;
    useConversation(message.conversation);
    if (seen.has(message.seq)) return;
    remember(message.seq);
    const mine = message.sender && message.sender.kind === "visitor";
    const pending = mine && message.client_id && pendingBubble(message.client_id);
    if (pending) {
      dropFromOutbox(message.client_id);
      deliver(pending, message.seq);
    } else {
      place(messageRow(message), message.seq);
    }
    if (!mine) onAgentMessage();
    fillHoles();
  }

  function onAck(ack) {
    dropFromOutbox(ack.client_id);
    flushDelay = 2000;
    useConversation(ack.conversation);
    const pending = pendingBubble(ack.client_id);
    if (!pending) return;
    if (seen.has(ack.seq)) return pending.remove();
    remember(ack.seq);
    deliver(pending, ack.seq);
    fillHoles();
  }

  function onError(frame) {
    if (frame.code === "blocked") return refuse(frame.detail);
    if (!frame.client_id) {
      // The conversation to resume is gone: there is no history to wait for.
      if (frame.code === "not_found") onResumed();
      return;
    }
    const pending = pendingBubble(frame.client_id);
    if (frame.code === "unavailable" || frame.code === "rate_limited") {
      if (pending) setNote(pending, t.retrying);
      return scheduleFlush();
    }
    dropFromOutbox(frame.client_id);
    if (pending) fail(pending, frame.detail || frame.code);
  }

  function fail(row, text) {
    row.classList.add("gofly-msg-failed");
    setNote(row, text);
  }

  // Resolved: offer a rating (1-5 and a comment); any other status hides the offer.
  function onConversation(frame) {
    const info = frame.conversation;
    if (!ui || !info || (conversation !== null && info.id !== conversation)) return;
    ui.rating.hidden = info.status !== "resolved";
    ui.ratingThanks.hidden = true;
  }

  function onRated() {
    ui.rating.hidden = true;
    ui.ratingThanks.hidden = false;
  }

  function buildRating() {
    const box = h("div", "gofly-rating");
    box.hidden = true;
    box.append(h("div", "gofly-rating-title", t.rate));
    const stars = h("div", "gofly-stars");
    let score = 0;
    for (let n = 1; n <= 5; n++) {
      const star = h("button", "gofly-star", "★");
      star.type = "button";
      star.dataset.score = n;
      star.setAttribute("aria-label", String(n));
      star.addEventListener("click", () => {
        score = n;
        stars.querySelectorAll(".gofly-star").forEach((s) => {
          s.classList.toggle("gofly-star-on", Number(s.dataset.score) <= n);
        });
      });
      stars.append(star);
    }
    const comment = h("textarea", "gofly-rating-comment");
    comment.rows = 2;
    comment.placeholder = t.rateComment;
    const submit = h("button", "gofly-rating-send", t.rateSend);
    submit.type = "button";
    submit.addEventListener("click", () => {
      if (!score || conversation === null) return;
      send({ type: "rating", conversation, score, comment: comment.value });
    });
    box.append(stars, comment, submit);
    ui.ratingThanks = h("div", "gofly-rating-thanks", t.rated);
    ui.ratingThanks.hidden = true;
    return box;
  }

  // The waiting line: a position while every agent is busy, null once one has the chat.
  function onQueue(frame) {
    if (frame.conversation === conversation || conversation === null) {
      showQueue(frame.position);
    }
  }

  function showQueue(position) {
    if (!ui) return;
    ui.queue.textContent = position ? t.queue.replace("{n}", position) : "";
    ui.queue.hidden = !position;
  }

  function onTyping(frame) {
    if (frame.sender && frame.sender.kind !== "visitor") showAgentTyping(frame.active);
  }

  function onAgentMessage() {
    showAgentTyping(false);
    if (!isOpen) {
      if (resumedOnce) setUnread(unread + 1);
    } else if (!replaying) {
      markRead();
    }
  }

  function markRead() {
    if (conversation === null || lastSeq <= readSent) return;
    if (send({ type: "read", conversation: conversation, seq: lastSeq })) readSent = lastSeq;
  }

  // Blocked: the server's sentence stays, and nothing is sent or retried any more.
  function refuse(text) {
    blocked = true;
    clearTimeout(retryTimer);
    showStatus(text || t.refused);
    ui.composer.hidden = true;
    ui.leave.hidden = true;
  }

  // Leave a message -------------------------------------------------------------------------

  // TODO(gofly): availability is decided once per session answer; an agent coming online
  // while the form is up is not announced to open widgets. A socket frame for it would let
  // the composer come back live.
  function showLeaveForm(reason) {
    if (blocked) return;
    const offered = reason === "closed" || reason === "nobody_online";
    ui.leave.hidden = !offered;
    ui.composer.hidden = offered;
    // After a message was left, the thanks stays even when a new session answer comes in.
    if (offered && !ui.leaveFields.hidden) {
      ui.leaveIntro.textContent = reason === "closed" ? t.closed : t.nobodyOnline;
    }
  }

  function leaveMessage(event) {
    event.preventDefault();
    leaveId = leaveId || newId();
    ui.leaveError.hidden = true;
    ui.leaveButton.disabled = true;
    fetch(BASE + "/api/widget/v1/messages", {
      method: "POST",
      credentials: "omit",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify({
        name: ui.leaveName.value,
        email: ui.leaveEmail.value,
        message: ui.leaveBody.value,
        client_id: leaveId,
      }),
    })
      .then((response) =>
        response.json().then((data) => {
          if (!response.ok) throw data;
          return data;
        })
      )
      .then(
        () => {
          leaveId = null;
          ui.leaveBody.value = "";
          ui.leaveFields.hidden = true;
          ui.leaveIntro.textContent = t.left;
        },
        (err) => {
          if (err && err.code === "blocked") return refuse(err.detail);
          ui.leaveError.textContent = (err && err.detail) || t.leaveFailed;
          ui.leaveError.hidden = false;
        }
      )
      .finally(() => (ui.leaveButton.disabled = false));
  }

  // Outgoing messages -----------------------------------------------------------------------

  function submit() {
    const body = ui.input.value.trim();
    if (!body) return;
    ui.input.value = "";
    autosize();
    stopTyping();
    const item = { client_id: newId(), body: body };
    save("outbox", outbox().concat(item));
    showPending(item);
    send(messageFrame(item));
  }

  function messageFrame(item) {
    const attachment = item.attachment ? item.attachment.id : null;
    return { type: "message", client_id: item.client_id, body: item.body, attachment: attachment };
  }

  // A file goes up over HTTP first; only then does its message (which names the upload) join
  // the outbox, holding the upload's description and never the file itself.
  function attach(file) {
    const item = { client_id: newId(), body: "" };
    const row = showPending({ client_id: item.client_id, body: file.name });
    setNote(row, t.uploading);
    const form = new FormData();
    form.append("file", file);
    fetch(BASE + "/api/widget/v1/uploads", {
      method: "POST",
      credentials: "omit",
      headers: { Authorization: "Bearer " + token },
      body: form,
    })
      .then((response) =>
        response.json().then((data) => {
          if (!response.ok) throw data;
          return data;
        })
      )
      .then(
        (data) => {
          item.attachment = data;
          save("outbox", outbox().concat(item));
          row.replaceChild(bubble(item), row.querySelector(".gofly-bubble"));
          setNote(row, t.sending);
          send(messageFrame(item));
        },
        (err) => fail(row, (err && err.detail) || t.uploadFailed)
      );
  }

  function attachAll(files) {
    Array.from(files || []).forEach(attach);
    return files && files.length > 0;
  }

  // Resending is safe: the server answers a known client_id with the same ack and stores
  // nothing new, so after a lost ack, a reload or a reconnect everything pending goes again.
  function flushOutbox() {
    outbox().forEach((item) => send(messageFrame(item)));
  }

  function scheduleFlush() {
    if (flushTimer) return;
    flushTimer = setTimeout(() => {
      flushTimer = 0;
      flushOutbox();
    }, flushDelay);
    flushDelay = Math.min(flushDelay * 2, 30000);
  }

  // Typing frames go at most every 2 s (docs/protocol.md); a keystroke inside that window
  // is not dropped but deferred to its end, so the agent still sees it with the newest draft.
  function onInput() {
    autosize();
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
    if (typingDue) return;
    const wait = Math.max(0, typingSentAt + TYPING_EVERY_MS - Date.now());
    typingDue = setTimeout(startTyping, wait);
  }

  function startTyping() {
    typingDue = 0;
    if (!ui.input.value) return;
    typingSentAt = Date.now();
    typingOn = send({ type: "typing", state: "start", preview: ui.input.value }) || typingOn;
  }

  function stopTyping() {
    clearTimeout(typingIdle);
    clearTimeout(typingDue);
    typingDue = 0;
    if (!typingOn) return;
    typingSentAt = Date.now();
    typingOn = !send({ type: "typing", state: "stop" });
  }

  function onKeyDown(event) {
    // Enter also confirms a Chinese IME candidate and must not send then (Safari reports
    // that only through keyCode 229).
    const composing = event.isComposing || event.keyCode === 229;
    if (event.key === "Enter" && !event.shiftKey && !composing) {
      event.preventDefault();
      submit();
    }
  }

  // DOM -------------------------------------------------------------------------------------

  function h(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function icon(path) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const shape = document.createElementNS(ns, "path");
    shape.setAttribute("d", path);
    svg.append(shape);
    return svg;
  }

  function buildUi(site) {
    const pageLang = document.documentElement.lang || "";
    const zh = /^zh/i.test(pageLang) || /^zh/i.test((site && site.language) || "");
    t = zh ? STRINGS.zh : STRINGS.en;

    const host = h("div");
    host.id = "gofly-widget";
    const root = host.attachShadow({ mode: "open" });
    ui = { host: host };
    ui.launcher = buildLauncher();
    ui.panel = buildPanel();
    root.append(h("style", "", CSS), ui.launcher, ui.panel);
    document.body.append(host);
    // Messages not acknowledged before the last reload; they are resent once connected.
    outbox().forEach((item) => showPending(item));
    if (isOpen) open();
  }

  function buildLauncher() {
    const button = h("button", "gofly-launcher");
    button.type = "button";
    button.setAttribute("aria-label", t.open);
    button.setAttribute("aria-expanded", "false");
    button.append(icon("M4 4h16v12H7l-3 3z"));
    ui.badge = h("span", "gofly-badge");
    ui.badge.hidden = true;
    button.append(ui.badge);
    button.addEventListener("click", () => (isOpen ? close() : open()));
    return button;
  }

  function buildPanel() {
    const panel = h("div", "gofly-panel");
    panel.hidden = true;
    panel.setAttribute("role", "dialog");
    panel.addEventListener("keydown", (e) => e.key === "Escape" && close());
    const dragging = (e, on) => {
      if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
      e.preventDefault();
      panel.classList.toggle("gofly-drop", on);
    };
    panel.addEventListener("dragover", (e) => dragging(e, true));
    panel.addEventListener("dragleave", (e) => dragging(e, panel.contains(e.relatedTarget)));
    panel.addEventListener("drop", (e) => {
      dragging(e, false);
      attachAll(e.dataTransfer.files);
    });

    const header = h("div", "gofly-header");
    ui.title = h("span", "gofly-title", t.title);
    const closeButton = h("button", "gofly-close", "×");
    closeButton.type = "button";
    closeButton.setAttribute("aria-label", t.close);
    closeButton.addEventListener("click", close);
    header.append(ui.title, closeButton);

    ui.status = h("div", "gofly-status", t.connecting);
    ui.queue = h("div", "gofly-queue");
    ui.queue.hidden = true;
    ui.list = h("div", "gofly-list");
    ui.list.setAttribute("role", "log");
    ui.list.addEventListener("scroll", onScroll);
    ui.typing = h("div", "gofly-typing", t.typing);
    ui.typing.hidden = true;
    ui.rating = buildRating();
    ui.composer = buildComposer();
    panel.append(
      header, ui.status, ui.queue, ui.list, ui.typing, ui.rating, ui.ratingThanks, ui.composer,
      buildLeaveForm()
    );
    return panel;
  }

  function buildLeaveForm() {
    const form = h("form", "gofly-leave");
    form.hidden = true;
    form.noValidate = true; // the server's sentences say what to fix, in the page's language
    ui.leave = form;
    ui.leaveIntro = h("p", "gofly-leave-intro");
    ui.leaveFields = h("div", "gofly-leave-fields");
    const field = (tag, type, label, autocomplete) => {
      const input = h(tag, "gofly-field");
      if (type) input.type = type;
      input.placeholder = label;
      input.setAttribute("aria-label", label);
      if (autocomplete) input.autocomplete = autocomplete;
      ui.leaveFields.append(input);
      return input;
    };
    ui.leaveName = field("input", "text", t.name, "name");
    ui.leaveEmail = field("input", "email", t.email, "email");
    ui.leaveBody = field("textarea", null, t.message);
    ui.leaveBody.rows = 3;
    ui.leaveError = h("div", "gofly-leave-error");
    ui.leaveError.setAttribute("role", "alert");
    ui.leaveError.hidden = true;
    ui.leaveButton = h("button", "gofly-send", t.leave);
    ui.leaveButton.type = "submit";
    ui.leaveFields.append(ui.leaveError, ui.leaveButton);
    form.append(ui.leaveIntro, ui.leaveFields);
    form.addEventListener("submit", leaveMessage);
    return form;
  }

  function buildComposer() {
    const composer = h("div", "gofly-composer");
    ui.input = h("textarea", "gofly-input");
    ui.input.rows = 1;
    ui.input.placeholder = t.placeholder;
    ui.input.setAttribute("aria-label", t.placeholder);
    ui.input.addEventListener("input", onInput);
    ui.input.addEventListener("keydown", onKeyDown);
    ui.input.addEventListener("paste", (e) => {
      if (attachAll(e.clipboardData && e.clipboardData.files)) e.preventDefault();
    });
    const sendButton = h("button", "gofly-send", t.send);
    sendButton.type = "button";
    sendButton.addEventListener("click", submit);
    const file = h("input", "gofly-file");
    file.type = "file";
    file.multiple = true;
    file.hidden = true;
    file.addEventListener("change", () => {
      attachAll(file.files);
      file.value = "";
    });
    const attachButton = h("button", "gofly-attach");
    attachButton.type = "button";
    attachButton.title = t.attach;
    attachButton.setAttribute("aria-label", t.attach);
    attachButton.append(icon(CLIP));
    attachButton.addEventListener("click", () => file.click());
    composer.append(attachButton, file, ui.input, sendButton);
    return composer;
  }

  function applySite(site) {
    ui.title.textContent = site.title || site.name || t.title;
    ui.panel.setAttribute("aria-label", ui.title.textContent);
    if (site.color) ui.host.style.setProperty("--gofly-color", site.color);
    if (site.welcome && !ui.welcome) {
      ui.welcome = h("div", "gofly-welcome");
      ui.welcome.append(h("div", "gofly-bubble", site.welcome));
      ui.list.prepend(ui.welcome);
    }
  }

  function messageRow(message) {
    const kind = (message.sender && message.sender.kind) || "agent";
    const mine = kind === "visitor";
    const row = h("div", "gofly-msg " + (mine ? "gofly-msg-visitor" : "gofly-msg-agent"));
    if (kind === "bot") row.classList.add("gofly-msg-bot");
    const name = kind === "bot" ? t.bot : message.sender && message.sender.name;
    if (!mine && name) row.append(h("div", "gofly-name", name));
    row.append(bubble(message));
    if (message.created_at) row.title = new Date(message.created_at).toLocaleString();
    return row;
  }

  function bubble(message) {
    const node = h("div", "gofly-bubble", message.body);
    if (message.attachment) node.append(attachmentLink(message.attachment));
    return node;
  }

  // Images show inline and open in a new tab; other files are a link with name and size.
  function attachmentLink(a) {
    const link = h("a", "gofly-link");
    const href = fileUrl(a.url);
    if (href) link.href = link.dataset.url = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    if (/^image\//.test(a.content_type) && href) {
      const img = h("img", "gofly-img");
      img.src = href;
      img.alt = a.name || "";
      img.addEventListener("load", () => stick && toBottom());
      link.append(img);
    } else {
      link.textContent = (a.name || "file") + " (" + formatSize(a.size || 0) + ")";
    }
    return link;
  }

  function formatSize(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return Math.round(n / 1024) + " KB";
    return (n / 1048576).toFixed(1) + " MB";
  }

  // Only web links: a `javascript:` URL in a message must never become clickable code.
  // Files are fetched with the visitor's token in the query: an <img> cannot send headers.
  function fileUrl(value) {
    try {
      const url = new URL(value, BASE);
      if (url.protocol !== "https:" && url.protocol !== "http:") return null;
      if (url.origin === BASE && token) url.searchParams.set("token", token);
      return url.href;
    } catch (e) {
      return null;
    }
  }

  function showPending(item) {
    const row = messageRow({ body: item.body, attachment: item.attachment, sender: VISITOR });
    row.dataset.clientId = item.client_id;
    row.classList.add("gofly-pending");
    setNote(row, t.sending);
    appendRow(row, ui.list.children.length);
    return row;
  }

  function pendingBubble(clientId) {
    for (const row of ui.list.querySelectorAll(".gofly-msg[data-client-id]")) {
      if (row.dataset.clientId === clientId) return row;
    }
    return null;
  }

  function deliver(row, seq) {
    row.classList.remove("gofly-pending");
    delete row.dataset.clientId;
    setNote(row, "");
    place(row, seq);
  }

  // Keep delivered messages in seq order and above the ones still pending.
  function place(row, seq) {
    row.dataset.seq = seq;
    const rows = Array.from(ui.list.children);
    const index = rows.findIndex(
      (node) => node !== row && (node.dataset.clientId || Number(node.dataset.seq) > seq)
    );
    appendRow(row, index === -1 ? rows.length : index);
  }

  function appendRow(row, index) {
    const list = ui.list;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.insertBefore(row, list.children[index] || null);
    if (atBottom || row.classList.contains("gofly-msg-visitor")) toBottom();
  }

  // A loading image grows the list after the fact: it stays at the bottom until the reader
  // scrolls up (growth and scroll anchoring only ever move scrollTop down).
  function toBottom() {
    stick = true;
    ui.list.scrollTop = ui.list.scrollHeight;
  }

  function onScroll() {
    const list = ui.list;
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 40) stick = true;
    else if (list.scrollTop < lastTop) stick = false;
    lastTop = list.scrollTop;
  }

  function setNote(row, text) {
    let note = row.querySelector(".gofly-note");
    if (!note) row.append((note = h("div", "gofly-note")));
    note.textContent = text;
    note.hidden = !text;
  }

  function showStatus(text) {
    ui.status.textContent = text;
    ui.status.hidden = !text;
  }

  function showAgentTyping(active) {
    clearTimeout(agentTypingTimer);
    if (!ui) return;
    ui.typing.hidden = !active;
    if (active) agentTypingTimer = setTimeout(() => showAgentTyping(false), AGENT_TYPING_MS);
  }

  function setUnread(count) {
    unread = count;
    ui.badge.textContent = count > 99 ? "99+" : String(count);
    ui.badge.hidden = count === 0;
  }

  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = Math.min(ui.input.scrollHeight, 120) + "px";
  }

  // Public API ------------------------------------------------------------------------------

  function open() {
    isOpen = true;
    if (!ui) return; // buildUi() opens the panel once it exists
    ui.panel.hidden = false;
    ui.launcher.setAttribute("aria-expanded", "true");
    setUnread(0);
    markRead();
    toBottom();
    (ui.composer.hidden ? ui.leaveName : ui.input).focus();
  }

  function close() {
    isOpen = false;
    if (!ui) return;
    ui.panel.hidden = true;
    ui.launcher.setAttribute("aria-expanded", "false");
    if (document.activeElement === ui.host) ui.launcher.focus();
  }

  const CSS = `
:host { all: initial; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
/* Page rules matching the host element itself (a "*" rule, an inherited body direction)
   still reach it; inheritance stops here. "all" never resets direction, so it is named. */
.gofly-launcher, .gofly-panel { all: initial; direction: ltr; box-sizing: border-box; }
.gofly-launcher, .gofly-panel {
  --c: var(--gofly-color, #1f6feb);
  position: fixed; right: 20px; z-index: 2147483000;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", "PingFang SC", "Microsoft YaHei", sans-serif;
}
.gofly-launcher {
  bottom: 20px; width: 56px; height: 56px; border: 0; border-radius: 50%;
  background: var(--c); color: #fff; cursor: pointer; padding: 15px;
  box-shadow: 0 4px 14px rgba(0,0,0,.25);
}
.gofly-launcher svg { width: 26px; height: 26px; fill: currentColor; }
.gofly-badge {
  position: absolute; top: -4px; right: -4px; min-width: 20px; height: 20px; padding: 0 5px;
  border-radius: 10px; background: #d93025; color: #fff; font-size: 12px; line-height: 20px;
}
.gofly-panel {
  bottom: 88px; width: 360px; height: 520px; max-height: calc(100vh - 108px);
  display: flex; flex-direction: column; overflow: hidden;
  background: #fff; color: #1f2328; border-radius: 12px; box-shadow: 0 8px 30px rgba(0,0,0,.25);
}
.gofly-header {
  display: flex; align-items: center; padding: 12px 14px; background: var(--c); color: #fff;
}
.gofly-title { flex: 1; font-weight: 600; font-size: 15px; }
.gofly-close {
  border: 0; background: none; color: inherit; font-size: 22px; line-height: 1; cursor: pointer;
}
.gofly-status { padding: 4px 14px; background: #fff8c5; font-size: 12px; color: #6e5600; }
.gofly-queue { padding: 6px 14px; background: #eef4ff; font-size: 12px; color: #1d3f8f; }
.gofly-rating, .gofly-rating-thanks { padding: 8px 14px; border-top: 1px solid #eee;
  font-size: 13px; }
.gofly-star { background: none; border: 0; font-size: 22px; color: #c9ccd1; cursor: pointer; }
.gofly-star-on { color: #f5a623; }
.gofly-rating-comment { width: 100%; box-sizing: border-box; margin: 4px 0; font: inherit; }
.gofly-list {
  flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px;
  background: #f6f8fa;
}
.gofly-msg, .gofly-welcome { display: flex; flex-direction: column; align-items: flex-start; }
.gofly-msg-visitor { align-items: flex-end; }
.gofly-bubble {
  max-width: 80%; padding: 8px 12px; border-radius: 14px; background: #fff;
  border: 1px solid #e1e4e8; white-space: pre-wrap; overflow-wrap: anywhere;
}
.gofly-msg-visitor .gofly-bubble { background: var(--c); border-color: transparent; color: #fff; }
.gofly-pending .gofly-bubble { opacity: .6; }
.gofly-msg-failed .gofly-bubble { opacity: .6; border: 1px dashed #d93025; }
.gofly-name, .gofly-note { font-size: 11px; color: #656d76; margin: 0 6px 2px; }
.gofly-note { margin-top: 2px; }
.gofly-msg-failed .gofly-note { color: #d93025; }
.gofly-link { display: block; color: inherit; text-decoration: underline; }
.gofly-img { display: block; max-width: 100%; max-height: 240px; border-radius: 8px; }
.gofly-drop .gofly-list { outline: 2px dashed var(--c); outline-offset: -6px; }
.gofly-attach { border: 0; background: none; padding: 0 2px; color: #656d76; cursor: pointer; }
.gofly-attach svg { width: 22px; height: 22px; fill: none; stroke: currentColor; stroke-width: 2; }
.gofly-typing { padding: 2px 14px; font-size: 12px; color: #656d76; background: #f6f8fa; }
.gofly-composer { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #e1e4e8; }
.gofly-input {
  flex: 1; resize: none; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px;
  font: inherit; color: inherit; max-height: 120px;
}
.gofly-input:focus { outline: 2px solid var(--c); outline-offset: -1px; }
.gofly-send {
  border: 0; border-radius: 8px; padding: 0 14px; background: var(--c); color: #fff;
  font: inherit; font-weight: 600; cursor: pointer;
}
.gofly-leave { padding: 10px; border-top: 1px solid #e1e4e8; }
.gofly-leave-intro { margin: 0 0 8px; font-size: 13px; color: #1f2328; }
.gofly-leave-fields { display: flex; flex-direction: column; gap: 6px; }
.gofly-field {
  border: 1px solid #d0d7de; border-radius: 8px; padding: 7px 8px; font: inherit; color: inherit;
  resize: vertical;
}
.gofly-field:focus { outline: 2px solid var(--c); outline-offset: -1px; }
.gofly-leave .gofly-send { padding: 8px 14px; align-self: flex-end; }
.gofly-leave-error { font-size: 12px; color: #d93025; }
@media (max-width: 480px) {
  .gofly-panel { right: 0; bottom: 0; width: 100%; height: 100%; max-height: none; border-radius: 0; }
}
`;

  function start() {
    startSession();
  }

  window.Gofly = { open: open, close: close };
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
