/* gofly agent dashboard: conversation lists, one open thread, live over /ws/agent/.
 *
 * The server is the source of truth. After every (re)connect the lists are fetched again and
 * the open thread resumes from the last seq held, so a dropped socket or a restarted server
 * never needs a page refresh. Messages are keyed by (conversation, seq): duplicates from the
 * channel layer and from resume are dropped here.
 */
(function () {
  "use strict";

  var T = JSON.parse(document.getElementById("gofly-strings").textContent);
  var root = document.querySelector(".dashboard");
  var myId = Number(root.dataset.userId);
  var $ = function (id) { return document.getElementById(id); };

  var state = {
    socket: null,
    attempts: 0,
    view: "mine",               // routing hands conversations out: an agent starts at their own
    conversations: new Map(),   // id -> summary
    messages: new Map(),        // id -> Map(seq -> frame)
    upTo: new Map(),            // id -> every seq up to this one is held
    resuming: new Set(),        // ids with a resume under way
    selected: null,
    pending: new Map(),         // client_id -> {conversation, body, attachment, uploading, error}
    known: new Set(),           // conversation ids seen, to notify only on new ones
    images: new Map(),          // upload id -> <img>, reused so re-rendering does not reload
    stick: true,                // the thread follows its bottom
    lastTop: 0,
    typingTimer: null,
    lastTypingSent: 0,
    team: new Map(),            // user id -> {id, name, status}: colleagues on the same sites
    teams: [],                  // [{id, name}]: transfer targets besides colleagues
    active: false,              // the agent used the dashboard since the last ping
    canned: [],                 // the "/" suggestions shown, [{id, shortcut, title}]
    cannedActive: 0,            // index of the highlighted suggestion
    cannedAsked: 0,             // bumped per request, so a slow answer cannot reopen the list
    search: null,               // {query, key, text, cursor} while results are shown
  };

  // ---------------------------------------------------------------------------------------
  // Socket

  function showMyStatus(status) {
    var select = $("my-status");
    select.disabled = !status;  // a superuser without an agent profile has no status
    select.value = status || "offline";
    select.dataset.status = status || "";
  }

  function renderTeam() {
    var list = $("team");
    list.textContent = "";
    Array.from(state.team.values()).forEach(function (agent) {
      var item = document.createElement("li");
      item.dataset.agent = agent.id;
      item.dataset.status = agent.status;
      var dot = document.createElement("span");
      dot.className = "dot " + agent.status;
      item.appendChild(dot);
      item.appendChild(document.createTextNode(agent.name + " · " + T["status_" + agent.status]));
      list.appendChild(item);
    });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/ws/agent/");
    state.socket = socket;
    socket.onmessage = function (event) { handle(JSON.parse(event.data)); };
    socket.onclose = function (event) {
      state.socket = null;
      state.resuming.clear();  // their `resumed` will not come on this socket
      if (event.code === 4401) { location.href = "/accounts/login/?next=/dashboard/"; return; }
      showConnection(T.reconnecting);
      // Exponential backoff with full jitter so a restarted server is not hit by every tab
      // at the same instant.
      var cap = Math.min(15000, 500 * Math.pow(2, state.attempts++));
      setTimeout(connect, Math.random() * cap);
    };
  }

  function send(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function handle(frame) {
    var handler = handlers[frame.type];
    if (handler) { handler(frame); }
  }

  var handlers = {
    ready: function (frame) {
      state.attempts = 0;
      state.teams = frame.teams || [];
      state.team = new Map();
      (frame.agents || []).forEach(function (agent) { state.team.set(agent.id, agent); });
      showMyStatus(frame.status);
      renderTeam();
      showConnection(null);
      refreshLists().then(function () {
        if (state.selected !== null) { resume(state.selected); }
        state.pending.forEach(function (item, clientId) {
          if (!item.uploading && !item.error) { send(messageFrame(clientId, item)); }
        });
      });
    },
    message: function (frame) {
      addMessage(frame);
      var summary = state.conversations.get(frame.conversation);
      if (!summary) { loadSummary(frame.conversation, true); return; }
      summary.last_seq = Math.max(summary.last_seq, frame.seq);
      summary.last_message_preview = frame.body || (frame.attachment && frame.attachment.name);
      summary.last_message_at = frame.created_at;
      if (frame.sender.kind === "visitor") {
        if (state.selected === frame.conversation && document.hasFocus()) {
          markRead(frame.conversation);
        } else {
          summary.unread = (summary.unread || 0) + 1;
        }
        hideTyping(frame.conversation);
      }
      renderList();
    },
    ack: function (frame) {
      state.pending.delete(frame.client_id);
      var bubble = document.querySelector('[data-client-id="' + cssEscape(frame.client_id) + '"]');
      if (bubble) { bubble.classList.remove("pending"); }
    },
    error: function (frame) {
      if (!frame.client_id || !state.pending.has(frame.client_id)) { return; }
      if (frame.code === "unavailable" || frame.code === "rate_limited") {
        // Not stored: send it again by itself, waiting 2 s doubling to 30 s as the widget
        // does, so every open tab does not hammer a database that is struggling.
        var item = state.pending.get(frame.client_id);
        item.retryDelay = Math.min((item.retryDelay || 1000) * 2, 30000);
        setTimeout(function () {
          if (state.pending.get(frame.client_id) === item) {
            send(messageFrame(frame.client_id, item));
          }
        }, item.retryDelay);
        return;
      }
      // Kept in the thread, marked failed with the server's reason, and never resent.
      state.pending.get(frame.client_id).error = frame.detail || frame.code;
      renderMessages();
    },
    conversation: function (frame) {
      var summary = frame.conversation;
      var isNew = !state.known.has(summary.id);
      var previous = state.conversations.get(summary.id);
      if (previous && summary.unread === 0) { summary.unread = previous.unread; }
      state.conversations.set(summary.id, summary);
      state.known.add(summary.id);
      if (isNew) { notifyNew(summary); }
      renderList();
      if (state.selected === summary.id) { renderThreadHead(); }
    },
    conversation_removed: function (frame) {
      state.conversations.delete(frame.conversation);
      if (state.selected === frame.conversation) { select(null); }
      renderList();
    },
    typing: function (frame) {
      if (frame.conversation !== state.selected) { return; }
      if (!frame.active) { hideTyping(frame.conversation); return; }
      var line = $("typing");
      line.textContent = T.visitor_typing + (frame.preview ? " " + frame.preview : "");
      line.hidden = false;
      clearTimeout(state.typingTimer);
      state.typingTimer = setTimeout(function () { line.hidden = true; }, 6000);
    },
    read: function (frame) {
      if (frame.by !== "agent") { return; }
      var summary = state.conversations.get(frame.conversation);
      if (summary) { summary.unread = 0; renderList(); }
    },
    resumed: function (frame) { state.resuming.delete(frame.conversation); },
    pong: function () {},
    note: function (frame) {
      if (frame.conversation === state.selected) { addNote(frame); }
    },
    blocked: function (frame) {
      if (frame.conversation === state.selected) { $("block-done").hidden = false; }
    },
    agent_status: function (frame) {
      var known = state.team.get(frame.agent.id) || {id: frame.agent.id};
      known.name = frame.agent.name;
      known.status = frame.status;
      state.team.set(frame.agent.id, known);
      if (frame.agent.id === myId) { showMyStatus(frame.status); }
      renderTeam();
      if (state.selected !== null) { renderTransferChoices(); }
    },
  };

  // ---------------------------------------------------------------------------------------
  // Lists

  function api(path) {
    return fetch(path, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      });
  }

  function refreshLists() {
    return api("/api/agent/v1/conversations?view=open").then(function (data) {
      state.conversations.clear();
      data.conversations.forEach(function (summary) {
        state.conversations.set(summary.id, summary);
        state.known.add(summary.id);
      });
      renderList();
    }).catch(function () { /* the socket's reconnect will try again */ });
  }

  function loadSummary(id, notify) {
    return api("/api/agent/v1/conversations/" + id).then(function (summary) {
      var isNew = !state.known.has(id);
      state.conversations.set(id, summary);
      state.known.add(id);
      if (notify && isNew) { notifyNew(summary); }
      renderList();
    }).catch(function () {});
  }

  function inView(summary, view) {
    if (summary.status === "resolved") { return false; }
    // The bot's conversations need nobody yet: they show under Open, marked, not as waiting.
    if (view === "waiting") { return !summary.assignee && !summary.bot_active; }
    if (view === "mine") { return summary.assignee && summary.assignee.id === myId; }
    return true;
  }

  function renderList() {
    var all = Array.from(state.conversations.values());
    ["waiting", "mine", "open"].forEach(function (view) {
      var count = all.filter(function (s) { return inView(s, view); }).length;
      document.querySelector('[data-count="' + view + '"]').textContent = count;
    });
    var shown = all.filter(function (s) { return inView(s, state.view); });
    shown.sort(function (a, b) {
      return (b.last_message_at || "").localeCompare(a.last_message_at || "");
    });
    var list = $("conversation-list");
    list.replaceChildren.apply(list, shown.map(listItem));
    $("list-empty").hidden = shown.length > 0 || state.search !== null;
  }

  function listItem(summary) {
    var item = el("li", "conv-item");
    item.dataset.id = summary.id;
    if (summary.id === state.selected) { item.classList.add("selected"); }
    var top = el("div", "conv-top");
    top.appendChild(el("strong", "conv-name", summary.visitor.name));
    if (summary.bot_active) { top.appendChild(el("span", "bot-badge", T.bot)); }
    if (summary.unread > 0) { top.appendChild(el("span", "unread", String(summary.unread))); }
    item.appendChild(top);
    item.appendChild(el("div", "conv-preview", summary.last_message_preview || ""));
    item.appendChild(el("time", "conv-time", shortTime(summary.last_message_at)));
    item.addEventListener("click", function () { select(summary.id); });
    return item;
  }

  // ---------------------------------------------------------------------------------------
  // Search: results replace the list until the agent goes back; "Load more" follows the
  // server's cursor, so a page never repeats or skips a hit even while new messages arrive.

  function searchShown(shown) {
    $("search-results").hidden = !shown;
    document.querySelector(".tabs").hidden = shown;
    $("conversation-list").hidden = shown;
    if (shown) { $("list-empty").hidden = true; } else { renderList(); }
  }

  // The search box and its filters as query parameters; empty fields are left out.
  function searchQuery() {
    var form = $("search");
    var query = new URLSearchParams();
    var text = $("search-input").value.trim();
    if (text) { query.set("q", text); }
    ["visitor", "label", "status", "from", "to"].forEach(function (name) {
      var value = form.elements[name].value.trim();
      if (value) { query.set(name, value); }
    });
    if (form.elements.mine.checked) { query.set("agent", String(myId)); }
    return query;
  }

  function search(query, cursor) {
    var text = query.get("q") || "";
    var key = query.toString();
    var page = new URLSearchParams(query);
    if (cursor) { page.set("cursor", cursor); }
    state.search = {query: query, key: key, text: text, cursor: null};
    $("search-more").hidden = true;
    if (!cursor) { $("search-list").replaceChildren(); }
    $("search-summary").textContent = text ? T.search_results.replace("%(text)s", text)
                                           : T.search_filtered;
    searchShown(true);
    var path = "/api/agent/v1/search?" + page.toString();
    fetch(path, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        return response.json().then(function (data) {
          if (!response.ok) { throw data; }
          return data;
        });
      })
      .then(function (data) {
        if (!state.search || state.search.key !== key) { return; }  // gone or replaced
        data.results.forEach(function (hit) { $("search-list").appendChild(searchHit(hit)); });
        state.search.cursor = data.next_cursor;
        $("search-more").hidden = !data.next_cursor;
        $("search-empty").hidden = $("search-list").children.length > 0;
      }, function (error) {
        $("search-summary").textContent = (error && error.detail) || T.search_failed;
      });
  }

  function searchHit(hit) {
    var item = el("li", "conv-item search-hit");
    item.dataset.conversation = hit.conversation;
    item.dataset.message = hit.id;
    var top = el("div", "conv-top");
    top.appendChild(el("strong", "conv-name", hit.visitor.name));
    if (hit.archived) { top.appendChild(el("span", "archived", T.search_archived)); }
    item.appendChild(top);
    item.appendChild(marked(el("div", "conv-preview"), hit.snippet, state.search.text));
    item.appendChild(el("time", "conv-time", shortTime(hit.created_at)));
    item.addEventListener("click", function () {
      if (!hit.archived) { openFromSearch(hit.conversation); return; }
      if (!item.querySelector(".archived-note")) {
        item.appendChild(el("p", "archived-note", T.search_archived_note));
      }
    });
    return item;
  }

  // The snippet as text, with each occurrence of the searched text in a <mark>.
  function marked(node, snippet, text) {
    var lower = snippet.toLowerCase();
    var wanted = text.toLowerCase();
    var at = 0;
    var found = wanted ? lower.indexOf(wanted) : -1;
    while (found >= 0) {
      node.appendChild(document.createTextNode(snippet.slice(at, found)));
      node.appendChild(el("mark", null, snippet.slice(found, found + wanted.length)));
      at = found + wanted.length;
      found = lower.indexOf(wanted, at);
    }
    node.appendChild(document.createTextNode(snippet.slice(at)));
    return node;
  }

  // A hit's conversation may be resolved and so not among the lists: fetch its summary too.
  function openFromSearch(id) {
    select(id);
    if (!state.conversations.has(id)) {
      loadSummary(id, false).then(function () {
        if (state.selected === id) { renderThreadHead(); }
      });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Thread

  function select(id) {
    state.selected = id;
    $("thread").hidden = id === null;
    $("sidebar").hidden = id === null;
    $("placeholder").hidden = id !== null;
    $("typing").hidden = true;
    closeCanned();
    if (id === null) { renderList(); return; }
    renderMessages();
    renderThreadHead();
    resume(id);
    markRead(id);
    api("/api/agent/v1/conversations/" + id).then(function (detail) {
      renderSidebar(detail);
      $("notes").replaceChildren();
      (detail.notes || []).forEach(addNote);
    }).catch(function () {});
    renderTransferChoices();
    renderList();
    $("composer-input").focus();
  }

  // Ask for what follows the last seq up to which nothing is missing. A conversation known only
  // from live frames holds no history yet, so that is 0 and its whole history is fetched.
  function resume(id) {
    if (state.resuming.has(id)) { return; }
    if (send({type: "resume", conversation: id, after_seq: state.upTo.get(id) || 0})) {
      state.resuming.add(id);
    }
  }

  function addMessage(frame) {
    var id = frame.conversation;
    if (!state.messages.has(id)) { state.messages.set(id, new Map()); }
    var held = state.messages.get(id);
    if (held.has(frame.seq)) { return; }
    held.set(frame.seq, frame);
    var upTo = state.upTo.get(id) || 0;
    while (held.has(upTo + 1)) { upTo++; }
    state.upTo.set(id, upTo);
    if (id === state.selected) {
      renderMessages();
      // Seqs have no gaps: a hole means a live frame was lost on the way (say, while the
      // server's Redis was down), so fetch what is missing now rather than at a reconnect.
      if (upTo < frame.seq) { resume(id); }
    }
  }

  function renderMessages() {
    var list = $("messages");
    var held = state.messages.get(state.selected) || new Map();
    var frames = Array.from(held.values()).sort(function (a, b) { return a.seq - b.seq; });
    var items = frames.map(messageItem);
    state.pending.forEach(function (item, clientId) {
      var acked = frames.some(function (f) { return f.client_id === clientId; });
      if (item.conversation === state.selected && !acked) {
        var pending = messageItem({client_id: clientId, body: item.body, seq: null,
                                   attachment: item.attachment,
                                   sender: {kind: "agent", name: T.you}});
        if (item.uploading) { pending.appendChild(el("small", "note", T.uploading)); }
        if (item.error) {
          pending.classList.replace("pending", "failed");
          pending.appendChild(el("small", "error", item.error));
        }
        items.push(pending);
      }
    });
    var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.replaceChildren.apply(list, items);
    if (atBottom || items.length < 30) { toBottom(); }
  }

  function messageItem(frame) {
    var item = el("li", "msg msg-" + frame.sender.kind);
    if (frame.seq === null) {
      item.classList.add("pending");
      item.dataset.clientId = frame.client_id;
    } else {
      item.dataset.seq = frame.seq;
    }
    var sender = frame.sender.kind === "bot" ? T.bot : (frame.sender.name || frame.sender.kind);
    item.appendChild(el("span", "msg-sender", sender));
    item.appendChild(el("p", "msg-body", frame.body));
    if (frame.attachment) { item.appendChild(attachmentLink(frame.attachment)); }
    if (frame.created_at) { item.appendChild(el("time", "msg-time", shortTime(frame.created_at))); }
    return item;
  }

  // Images show in the thread and open full size in a new tab; other files are a link with
  // name and size (the server sends those as downloads).
  function attachmentLink(attachment) {
    var link = el("a", "msg-attachment");
    if (/^(\/|https?:)/.test(attachment.url)) { link.href = attachment.url; }
    link.target = "_blank";
    link.rel = "noopener";
    if (/^image\//.test(attachment.content_type)) {
      var img = state.images.get(attachment.id);
      if (!img) {
        img = el("img", "msg-img");
        img.src = link.href;
        img.alt = attachment.name;
        img.addEventListener("load", function () { if (state.stick) { toBottom(); } });
        state.images.set(attachment.id, img);
      }
      link.appendChild(img);
    } else {
      link.textContent = attachment.name + " (" + formatSize(attachment.size) + ")";
    }
    return link;
  }

  function renderThreadHead() {
    var summary = state.conversations.get(state.selected);
    if (!summary) { return; }
    $("thread-title").textContent = summary.visitor.name;
    var status = T[summary.status] || summary.status;
    if (summary.status === "snoozed" && summary.snoozed_until) {
      status += " → " + shortTime(summary.snoozed_until);
    }
    if (summary.rating) { status += " · " + T.rating + " " + "★".repeat(summary.rating); }
    $("thread-status").textContent = status;
    renderLabels(summary.labels || []);
    $("snooze").value = "";
    $("take").hidden = summary.assignee !== null || summary.status === "resolved";
    $("resolve").hidden = summary.status === "resolved";
    $("reopen").hidden = summary.status !== "resolved" && summary.status !== "snoozed";
  }

  function renderSidebar(detail) {
    var visitor = detail.visitor;
    var rows = [["name", visitor.name], ["email", visitor.email], ["ip", visitor.ip],
                ["user_agent", visitor.user_agent], ["page", visitor.page_url],
                ["referrer", visitor.referrer], ["first_seen", shortTime(visitor.first_seen)],
                ["last_seen", shortTime(visitor.last_seen)]];
    var list = $("visitor-details");
    list.replaceChildren();
    $("block-done").hidden = true;
    rows.forEach(function (row) {
      list.appendChild(el("dt", null, T[row[0]]));
      list.appendChild(el("dd", null, row[1] || "—"));
    });
  }

  // Labels: chips with a remove button; the input adds one on Enter.
  function renderLabels(labels) {
    var chips = $("label-chips");
    chips.replaceChildren();
    labels.forEach(function (name) {
      var chip = el("span", "chip", name);
      chip.dataset.label = name;
      var remove = el("button", "chip-remove", "×");
      remove.type = "button";
      remove.addEventListener("click", function () {
        sendLabels(labels.filter(function (other) { return other !== name; }));
      });
      chip.appendChild(remove);
      chips.appendChild(chip);
    });
  }

  function sendLabels(labels) {
    if (state.selected !== null) {
      send({type: "labels", conversation: state.selected, labels: labels});
    }
  }

  function addNote(note) {
    var list = $("notes");
    if (list.querySelector("[data-note='" + note.id + "']")) { return; }
    var item = el("li", "note", note.body);
    item.dataset.note = note.id;
    item.appendChild(el("small", null, " — " + note.author.name + " · " +
                        shortTime(note.created_at)));
    list.appendChild(item);
  }

  // Colleagues (not oneself) and teams, as transfer targets.
  function renderTransferChoices() {
    var select = $("transfer-to");
    select.replaceChildren(el("option", null, T.transfer_to));
    select.firstChild.value = "";
    state.team.forEach(function (agent) {
      if (agent.id === myId) { return; }
      var option = el("option", null, agent.name + " · " + T["status_" + agent.status]);
      option.value = "agent:" + agent.id;
      select.appendChild(option);
    });
    state.teams.forEach(function (team) {
      var option = el("option", null, T.team + ": " + team.name);
      option.value = "team:" + team.id;
      select.appendChild(option);
    });
  }

  function markRead(id) {
    var summary = state.conversations.get(id);
    if (!summary || !summary.last_seq) { return; }
    summary.unread = 0;
    send({type: "read", conversation: id, seq: summary.last_seq});
  }

  function hideTyping(id) {
    if (id === state.selected) { $("typing").hidden = true; }
  }

  function messageFrame(clientId, item) {
    return {type: "message", client_id: clientId, conversation: item.conversation,
            body: item.body, attachment: item.attachment ? item.attachment.id : null};
  }

  function sendReply() {
    var input = $("composer-input");
    var body = input.value;
    if (!body.trim() || state.selected === null) { return; }
    var clientId = newClientId();
    var item = {conversation: state.selected, body: body};
    state.pending.set(clientId, item);
    input.value = "";
    renderMessages();
    send(messageFrame(clientId, item));
    send({type: "typing", conversation: state.selected, state: "stop"});
  }

  // A file is uploaded for the selected conversation first; its message, naming the upload,
  // is sent once the server has accepted it. Refusals show in the thread with the reason.
  function upload(file) {
    if (state.selected === null) { return; }
    var clientId = newClientId();
    var item = {conversation: state.selected, body: file.name, uploading: true};
    state.pending.set(clientId, item);
    renderMessages();
    var form = new FormData();
    form.append("file", file);
    form.append("conversation", String(item.conversation));
    fetch("/api/agent/v1/uploads", {
      method: "POST", credentials: "same-origin", body: form,
      headers: {Accept: "application/json", "X-CSRFToken": cookie("csrftoken")},
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw data; }
        return data;
      });
    }).then(function (data) {
      item.uploading = false;
      item.body = "";
      item.attachment = data;
      send(messageFrame(clientId, item));
    }, function (error) {
      item.uploading = false;
      item.error = (error && error.detail) || T.upload_failed;
    }).then(renderMessages);
  }

  function uploadAll(files) {
    Array.prototype.forEach.call(files || [], upload);
    return Boolean(files && files.length);
  }

  function setStatus(status) {
    if (state.selected !== null) {
      send({type: "status", conversation: state.selected, status: status});
    }
  }

  // ---------------------------------------------------------------------------------------
  // Canned replies: "/" at the start of the composer offers the agent's saved answers; the
  // server renders the picked one for the open conversation (visitor's name and so on).

  function cannedQuery() {
    var match = /^\/([^\s\/]*)$/.exec($("composer-input").value);
    return match ? match[1] : null;
  }

  function updateCanned() {
    var query = cannedQuery();
    if (query === null || state.selected === null) { closeCanned(); return; }
    var asked = ++state.cannedAsked;
    api("/api/agent/v1/canned?q=" + encodeURIComponent(query) +
        "&conversation=" + state.selected).then(function (data) {
      if (asked !== state.cannedAsked) { return; }
      state.canned = data.replies;
      state.cannedActive = 0;
      renderCanned();
    }).catch(function () { closeCanned(); });
  }

  function renderCanned() {
    var list = $("canned-list");
    list.replaceChildren.apply(list, state.canned.map(function (reply, index) {
      var item = el("li", "canned-item");
      item.setAttribute("role", "option");
      item.dataset.shortcut = reply.shortcut;
      item.appendChild(el("strong", null, "/" + reply.shortcut));
      item.appendChild(el("span", null, reply.title));
      if (index === state.cannedActive) {
        item.classList.add("active");
        item.setAttribute("aria-selected", "true");
      }
      // mousedown, not click: the composer keeps its focus and caret.
      item.addEventListener("mousedown", function (event) {
        event.preventDefault();
        pickCanned(reply);
      });
      return item;
    }));
    list.hidden = state.canned.length === 0;
    var active = list.querySelector(".active");
    if (active) { active.scrollIntoView({block: "nearest"}); }
  }

  function closeCanned() {
    state.cannedAsked++;
    state.canned = [];
    $("canned-list").hidden = true;
  }

  // Keys the open list takes for itself; with the list closed Enter sends as always.
  function cannedKey(event) {
    if (!state.canned.length || event.isComposing) { return false; }
    var count = state.canned.length;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      var step = event.key === "ArrowDown" ? 1 : count - 1;
      state.cannedActive = (state.cannedActive + step) % count;
      renderCanned();
    } else if (event.key === "Enter" || event.key === "Tab") {
      pickCanned(state.canned[state.cannedActive]);
    } else if (event.key === "Escape") {
      closeCanned();
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }

  function pickCanned(reply) {
    var conversation = state.selected;
    closeCanned();
    $("canned-error").hidden = true;
    api("/api/agent/v1/canned/" + reply.id + "/render?conversation=" + conversation)
      .then(function (data) {
        if (state.selected !== conversation) { return; }
        var input = $("composer-input");
        // A function, so "$&" and friends in the reply's text are not replacement patterns.
        input.value = input.value.replace(/^\/[^\s\/]*/, function () { return data.text; });
        input.focus();
        input.setSelectionRange(input.value.length, input.value.length);
      }).catch(function () {
        $("canned-error").textContent = T.canned_failed;
        $("canned-error").hidden = false;
      });
  }

  // TODO(gofly): list, edit and delete one's own replies here (the API already deletes);
  // until then the sidebar only adds, and admin manages the rest.
  function saveCanned(event) {
    event.preventDefault();
    var shortcut = $("canned-shortcut").value.trim();
    var body = {shortcut: shortcut, title: $("canned-title").value,
                body: $("canned-body").value};
    fetch("/api/agent/v1/canned", {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: {Accept: "application/json", "Content-Type": "application/json",
                "X-CSRFToken": cookie("csrftoken")},
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw data; }
        return data;
      });
    }).then(function () {
      $("canned-form").reset();
      $("canned-result").textContent = T.canned_saved.replace("%(shortcut)s", shortcut);
    }, function (error) {
      $("canned-result").textContent = (error && error.detail) || T.canned_failed;
    });
  }

  // ---------------------------------------------------------------------------------------
  // Notifications

  function notifyNew(summary) {
    if (summary.status === "resolved") { return; }
    beep();
    if (window.Notification && Notification.permission === "granted" && document.hidden) {
      new Notification(T.new_conversation, {body: summary.visitor.name + ": " +
                                              (summary.last_message_preview || "")});
    }
  }

  function beep() {
    try {
      var Context = window.AudioContext || window.webkitAudioContext;
      var audio = new Context();
      var tone = audio.createOscillator();
      var gain = audio.createGain();
      tone.frequency.value = 880;
      gain.gain.value = 0.05;
      tone.connect(gain);
      gain.connect(audio.destination);
      tone.start();
      tone.stop(audio.currentTime + 0.15);
    } catch (e) { /* no audio before the first user gesture; the list still updates */ }
  }

  // ---------------------------------------------------------------------------------------
  // Helpers

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  // A loading image grows the thread after the fact: it stays at the bottom until the agent
  // scrolls up (growth and scroll anchoring only ever move scrollTop down).
  function toBottom() {
    var list = $("messages");
    state.stick = true;
    list.scrollTop = list.scrollHeight;
  }

  function formatSize(bytes) {
    if (bytes < 1024) { return bytes + " B"; }
    if (bytes < 1048576) { return Math.round(bytes / 1024) + " KB"; }
    return (bytes / 1048576).toFixed(1) + " MB";
  }

  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function shortTime(iso) {
    if (!iso) { return ""; }
    var date = new Date(iso);
    var today = new Date().toDateString() === date.toDateString();
    return today ? date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"})
                 : date.toLocaleString();
  }

  function newClientId() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : value.replace(/"/g, '\\"');
  }

  function showConnection(text) {
    var banner = $("connection");
    banner.textContent = text || "";
    banner.hidden = !text;
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  document.querySelectorAll(".tabs [data-view]").forEach(function (tab) {
    tab.addEventListener("click", function () {
      state.view = tab.dataset.view;
      document.querySelectorAll(".tabs [data-view]").forEach(function (other) {
        other.classList.toggle("active", other === tab);
      });
      renderList();
    });
  });

  $("search").addEventListener("submit", function (event) {
    event.preventDefault();
    var query = searchQuery();
    if (query.toString()) { search(query, null); } else { searchShown(false); }
  });
  $("search-more").addEventListener("click", function () {
    if (state.search && state.search.cursor) { search(state.search.query, state.search.cursor); }
  });
  $("search-clear").addEventListener("click", function () {
    $("search").reset();
    state.search = null;
    searchShown(false);
  });

  $("composer").addEventListener("submit", function (event) {
    event.preventDefault();
    sendReply();
  });
  $("composer-input").addEventListener("keydown", function (event) {
    if (cannedKey(event)) { return; }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendReply();
    }
  });
  $("composer-input").addEventListener("input", function () {
    updateCanned();
    var now = Date.now();
    if (state.selected !== null && now - state.lastTypingSent > 2000) {
      state.lastTypingSent = now;
      send({type: "typing", conversation: state.selected, state: "start"});
    }
  });
  $("composer-input").addEventListener("paste", function (event) {
    if (uploadAll(event.clipboardData && event.clipboardData.files)) { event.preventDefault(); }
  });
  $("composer-attach").addEventListener("click", function () { $("composer-file").click(); });
  $("composer-file").addEventListener("change", function () {
    uploadAll(this.files);
    this.value = "";
  });
  function hasFiles(event) {
    var types = event.dataTransfer ? event.dataTransfer.types : [];
    return Array.prototype.indexOf.call(types, "Files") >= 0;
  }
  $("composer").addEventListener("dragover", function (event) {
    if (!hasFiles(event)) { return; }
    event.preventDefault();
    this.classList.add("dropping");
  });
  $("composer").addEventListener("dragleave", function (event) {
    if (!this.contains(event.relatedTarget)) { this.classList.remove("dropping"); }
  });
  $("composer").addEventListener("drop", function (event) {
    this.classList.remove("dropping");
    if (!hasFiles(event)) { return; }
    event.preventDefault();
    uploadAll(event.dataTransfer.files);
  });
  $("messages").addEventListener("scroll", function () {
    if (this.scrollHeight - this.scrollTop - this.clientHeight < 40) {
      state.stick = true;
    } else if (this.scrollTop < state.lastTop) {
      state.stick = false;
    }
    state.lastTop = this.scrollTop;
  });
  $("resolve").addEventListener("click", function () { setStatus("resolved"); });
  $("reopen").addEventListener("click", function () { setStatus("open"); });
  $("take").addEventListener("click", function () {
    if (state.selected !== null) { send({type: "take", conversation: state.selected}); }
  });
  $("snooze").addEventListener("change", function () {
    if (!this.value || state.selected === null) { return; }
    var until = new Date(Date.now() + Number(this.value) * 3600 * 1000).toISOString();
    send({type: "status", conversation: state.selected, status: "snoozed", until: until});
  });
  window.addEventListener("focus", function () {
    if (state.selected !== null) { markRead(state.selected); renderList(); }
  });
  document.addEventListener("click", function askOnce() {
    if (window.Notification && Notification.permission === "default") {
      Notification.requestPermission();
    }
    document.removeEventListener("click", askOnce);
  });
  // The server takes an agent with no activity for a while to away; a ping says whether the
  // agent used the dashboard since the previous one.
  ["keydown", "pointerdown", "mousemove", "focus"].forEach(function (kind) {
    window.addEventListener(kind, function () { state.active = true; }, {passive: true});
  });
  setInterval(function () {
    if (send({type: "ping", active: state.active})) { state.active = false; }
  }, 25000);
  $("transfer").addEventListener("submit", function (event) {
    event.preventDefault();
    var choice = $("transfer-to").value.split(":");
    if (choice.length !== 2 || state.selected === null) { return; }
    var frame = {type: "transfer", conversation: state.selected, note: $("transfer-note").value};
    frame[choice[0]] = Number(choice[1]);
    send(frame);
    $("transfer-note").value = "";
  });
  $("labels").addEventListener("submit", function (event) {
    event.preventDefault();
    var summary = state.conversations.get(state.selected);
    var name = $("label-input").value.trim();
    if (!summary || !name) { return; }
    sendLabels((summary.labels || []).concat([name]));
    $("label-input").value = "";
  });
  $("composer-input").addEventListener("blur", closeCanned);
  $("canned-form").addEventListener("submit", saveCanned);
  $("block").addEventListener("click", function () {
    if (state.selected === null || !window.confirm(T.block_confirm)) { return; }
    send({type: "block", conversation: state.selected});
  });
  $("note-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var body = $("note-input").value.trim();
    if (!body || state.selected === null) { return; }
    if (send({type: "note", conversation: state.selected, body: body})) {
      $("note-input").value = "";
    }
  });
  $("my-status").addEventListener("change", function () {
    send({type: "agent_status", status: this.value});
  });

  showConnection(T.connecting);
  connect();
})();
