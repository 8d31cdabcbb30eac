// Lintel manager UI: progressive enhancement only; every page works without it.
// Filter selects/checkboxes marked data-autosubmit submit their form on change
// (the Apply button stays for keyboard users and no-JS browsers).
document.addEventListener("change", function (event) {
  var el = event.target;
  if (el && el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) {
    el.form.submit();
  }
});

// -- the register (issue 17): a photo larger than the server takes is refused here, in
// words, before minutes of upload end in a bare "413" from the size limit.
document.addEventListener("submit", function (event) {
  var input = event.target.querySelector ? event.target.querySelector("input[type=file][data-max-bytes]") : null;
  if (!input || !input.files || !input.files.length) return;
  if (input.files[0].size <= Number(input.getAttribute("data-max-bytes"))) return;
  event.preventDefault();
  var old = event.target.querySelector(".too-large");
  if (old) old.remove();
  var note = document.createElement("p");
  note.className = "notice error too-large";
  note.setAttribute("role", "alert");
  note.textContent = input.getAttribute("data-too-large");
  event.target.prepend(note);
});

// -- the case page (issue 14): confirm final actions, update in place, enlarge faces,
// show the strip's evening hours. Plain DOM, no library, no inline script (CSP).
(function () {
  var ARM_MS = 4000; // how long a tapped final button waits for its confirming tap

  // A button with data-confirm needs a second tap within ARM_MS: the first turns it
  // into its question ("Confirm visitor?"); no dialog, one extra tap.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-confirm]") : null;
    if (!button || button.disabled) return;
    if (button.getAttribute("data-armed") === "1") return; // the confirming tap submits
    if (button.form && !button.form.checkValidity()) return; // let the browser say what is missing
    event.preventDefault();
    var label = button.textContent;
    button.setAttribute("data-armed", "1");
    button.classList.add("armed");
    button.textContent = button.getAttribute("data-confirm");
    setTimeout(function () {
      if (!button.isConnected) return;
      button.removeAttribute("data-armed");
      button.classList.remove("armed");
      button.textContent = label;
    }, ARM_MS);
  });

  function fieldValues(root, skip) {
    var kept = {};
    root.querySelectorAll("input[id], textarea[id], select[id]").forEach(function (el) {
      if (el.type === "hidden" || (skip && skip.contains(el))) return;
      kept[el.id] = el.type === "checkbox" || el.type === "radio" ? el.checked : el.value;
    });
    return kept;
  }

  function restore(kept) {
    Object.keys(kept).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) return;
      if (el.type === "checkbox" || el.type === "radio") {
        el.checked = kept[id];
      } else if (el.tagName === "SELECT") {
        if ([].some.call(el.options, function (o) { return o.value === kept[id]; })) el.value = kept[id];
      } else if (el.value === "" || el.value === el.defaultValue) {
        el.value = kept[id];
      }
    });
  }

  // Forms marked data-inplace (assign, log a call, the pickers' searches) fetch the
  // page and swap its main part, keeping what was typed elsewhere and the scroll.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-inplace") || !window.fetch) return;
    event.preventDefault();
    var post = (form.method || "get").toLowerCase() === "post";
    var data = new FormData(form, event.submitter || undefined);
    var url = form.action;
    if (!post) url += (url.indexOf("?") < 0 ? "?" : "&") + new URLSearchParams(data).toString();
    var main = document.querySelector("main");
    var kept = fieldValues(main, post ? form : null);
    if (!post) delete kept[(form.querySelector("input[type=search]") || {}).id];
    fetch(url, { method: post ? "POST" : "GET", body: post ? data : undefined, credentials: "same-origin" })
      .then(function (response) {
        return response.text().then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.querySelector("main");
          if (!response.ok || !fresh) {
            var old = form.querySelector(".inplace-error");
            if (old) old.remove();
            var note = document.createElement("p");
            note.className = "notice error inplace-error";
            note.setAttribute("role", "alert");
            note.textContent = fresh ? fresh.textContent.replace(/\s+/g, " ").trim() : String(response.status);
            form.prepend(note);
            return;
          }
          var y = window.scrollY;
          main.replaceWith(document.importNode(fresh, true));
          restore(kept);
          history.replaceState(null, "", response.url);
          window.scrollTo(0, y);
          initCase();
        });
      })
      .catch(function () { form.submit(); });
  });

  // Faces: a click shows the face large with its time and entrance.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.zoom") : null;
    if (!link || !window.HTMLDialogElement) return;
    event.preventDefault();
    var dialog = document.getElementById("zoom");
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.id = "zoom";
      dialog.innerHTML = '<figure><img alt=""><figcaption></figcaption></figure><form method="dialog"><button type="submit"></button></form>';
      document.body.appendChild(dialog);
      dialog.addEventListener("click", function (e) { if (e.target === dialog) dialog.close(); });
    }
    var img = link.querySelector("img");
    dialog.querySelector("img").src = link.href;
    dialog.querySelector("img").alt = img ? img.alt : "";
    dialog.querySelector("figcaption").textContent = link.getAttribute("data-caption") || "";
    dialog.querySelector("button").textContent = document.documentElement.lang === "zh-CN" ? "关闭" : "Close";
    dialog.showModal();
  });

  // The days x hours strip: on a narrow screen start at the evening hours (the main
  // evidence) and show the cue that earlier hours are a swipe away.
  function initCase() {
    document.querySelectorAll(".strip-wrap").forEach(function (wrap) {
      var cue = wrap.parentNode.querySelector(".strip-cue");
      if (wrap.scrollWidth > wrap.clientWidth + 1) {
        wrap.scrollLeft = wrap.scrollWidth;
        if (cue) cue.hidden = false;
      } else if (cue) {
        cue.hidden = true;
      }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", initCase);
  } else {
    initCase();
  }
})();

// -- the register import (issue 17): a running import's <progress> follows the job;
// when its state changes (dry run ready, applied, failed) the page reloads to show it.
// Without script the page refreshes itself (<noscript> meta refresh).
(function () {
  var box = document.querySelector(".import-progress[data-poll]");
  if (!box || !window.fetch) return;
  var bar = document.getElementById("import-bar");
  var count = document.getElementById("import-count");
  var badge = document.getElementById("import-status");
  var state = badge ? badge.getAttribute("data-status") : "";
  var POLL_MS = 1000;
  function poll() {
    fetch(box.getAttribute("data-poll"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) { setTimeout(poll, POLL_MS * 3); return; }
        if (p.status !== state) { window.location.reload(); return; }
        if (bar && count && p.total) {
          bar.max = p.total;
          bar.value = p.done;
          count.textContent = p.done + " / " + p.total;
        }
        setTimeout(poll, POLL_MS);
      })
      .catch(function () { setTimeout(poll, POLL_MS * 3); });
  }
  setTimeout(poll, POLL_MS);
})();
