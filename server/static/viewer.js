// Photo viewer of the review pages: zoom, pan, rotate, by mouse, touch (pinch and drag) and
// keyboard. Without JavaScript the photo still shows, fitted to the frame, with a link to the
// full file. Also the review's keyboard: single keys for the elements marked data-key (clicked:
// next/previous capture, accept, back to the one just done) and data-focus-key (focused: the
// reject reason, the flag note, the entry form); the viewer's keys work wherever the focus is,
// except while typing (Escape leaves a field). And the browser's offset from UTC goes into the
// `tz` cookie, so that the server shows times in the coordinator's local time.
'use strict';
(function () {
  var keyHandlers = [];

  // The key's letter as the hints show it: a Latin letter as typed; on another layout (Russian,
  // Kazakh) the Latin letter of the physical key (e.code KeyA -> 'a'), so that the shortcuts work
  // whichever layout is active.
  function letterOf(e) {
    if (e.key && /^[A-Za-z]$/.test(e.key)) return e.key;
    var m = /^Key([A-Z])$/.exec(e.code || '');
    if (m) return e.shiftKey ? m[1] : m[1].toLowerCase();
    return e.key && e.key.length === 1 ? e.key : null;
  }

  // The coordinator's local time: minutes east of UTC, for the server.
  var offset = String(-new Date().getTimezoneOffset());
  if (!document.cookie.split('; ').some(function (c) { return c === 'tz=' + offset; })) {
    document.cookie = 'tz=' + offset + '; path=/; max-age=31536000; samesite=strict';
  }

  function setup(viewer) {
    var stage = viewer.querySelector('.viewer-stage');
    var img = viewer.querySelector('img');
    var tools = viewer.querySelector('.viewer-tools');
    if (!stage || !img) return;
    var s = { scale: 1, x: 0, y: 0, rot: 0 };
    var pointers = new Map();
    var pinch = null;

    function apply() {
      img.style.transform = 'translate(' + s.x + 'px,' + s.y + 'px) scale(' + s.scale + ') rotate(' + s.rot + 'deg)';
      viewer.setAttribute('data-scale', s.scale.toFixed(2));
      viewer.setAttribute('data-rotation', String(s.rot));
    }
    function zoom(factor) {
      s.scale = Math.min(8, Math.max(0.5, s.scale * factor));
      apply();
    }
    function pan(dx, dy) { s.x += dx; s.y += dy; apply(); }
    function rotate(deg) { s.rot = (s.rot + deg + 360) % 360; apply(); }
    function reset() { s.scale = 1; s.x = 0; s.y = 0; s.rot = 0; apply(); }

    var actions = { 'zoom-in': function () { zoom(1.25); }, 'zoom-out': function () { zoom(0.8); },
      'rotate-left': function () { rotate(-90); }, 'rotate-right': function () { rotate(90); },
      'reset': reset };
    if (tools) {
      tools.hidden = false;
      tools.addEventListener('click', function (e) {
        var b = e.target.closest('button[data-action]');
        if (b && actions[b.dataset.action]) { e.preventDefault(); actions[b.dataset.action](); }
      });
    }
    stage.tabIndex = 0;
    // The viewer's keys, from anywhere on the page: arrows pan when the photo has the focus or
    // is zoomed in (a fitted photo leaves them to scroll the page).
    keyHandlers.push(function (e) {
      var step = 40;
      var arrows = document.activeElement === stage || s.scale > 1;
      switch (letterOf(e) || e.key) {
        case '+': case '=': zoom(1.25); return true;
        case '-': case '_': zoom(0.8); return true;
        case 'r': case 'R': rotate(e.shiftKey ? -90 : 90); return true;
        case '0': reset(); return true;
        case 'ArrowLeft': if (arrows) { pan(step, 0); return true; } return false;
        case 'ArrowRight': if (arrows) { pan(-step, 0); return true; } return false;
        case 'ArrowUp': if (arrows) { pan(0, step); return true; } return false;
        case 'ArrowDown': if (arrows) { pan(0, -step); return true; } return false;
        default: return false;
      }
    });
    stage.addEventListener('wheel', function (e) {
      e.preventDefault();
      zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15);
    }, { passive: false });
    stage.addEventListener('pointerdown', function (e) {
      stage.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      if (pointers.size === 2) {
        var p = Array.from(pointers.values());
        pinch = { dist: Math.hypot(p[0].x - p[1].x, p[0].y - p[1].y), scale: s.scale };
      }
    });
    stage.addEventListener('pointermove', function (e) {
      var prev = pointers.get(e.pointerId);
      if (!prev) return;
      var cur = { x: e.clientX, y: e.clientY };
      pointers.set(e.pointerId, cur);
      if (pointers.size === 2 && pinch) {
        var p = Array.from(pointers.values());
        var d = Math.hypot(p[0].x - p[1].x, p[0].y - p[1].y);
        if (pinch.dist > 0) { s.scale = Math.min(8, Math.max(0.5, pinch.scale * d / pinch.dist)); apply(); }
      } else if (pointers.size === 1) {
        pan(cur.x - prev.x, cur.y - prev.y);
      }
    });
    function up(e) { pointers.delete(e.pointerId); if (pointers.size < 2) pinch = null; }
    stage.addEventListener('pointerup', up);
    stage.addEventListener('pointercancel', up);
    stage.addEventListener('dblclick', function () { zoom(s.scale < 2 ? 2 : 0.5); });
    apply();
  }

  document.querySelectorAll('.viewer').forEach(setup);

  function typing(t) {
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  // Focuses a field; for a radio button, the one checked in its group.
  function focusField(el) {
    if (el.type === 'radio' && el.form) {
      var checked = el.form.querySelector('input[type=radio][name="' + el.name + '"]:checked');
      if (checked) el = checked;
    }
    el.focus();
    el.scrollIntoView({ block: 'center' });
  }

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (typing(e.target)) {
      if (e.key === 'Escape') { e.target.blur(); e.preventDefault(); }
      return;
    }
    var key = letterOf(e);
    var target = key && document.querySelector('[data-key="' + key + '"]');
    if (target) { e.preventDefault(); target.click(); return; }
    var field = key && document.querySelector('[data-focus-key="' + key + '"]');
    if (field) { e.preventDefault(); focusField(field); return; }
    for (var i = 0; i < keyHandlers.length; i++) {
      if (keyHandlers[i](e)) { e.preventDefault(); return; }
    }
  });

  // Enter on the reject reason rejects; Ctrl+Enter in the flag note flags.
  document.querySelectorAll('[data-submit-on-enter]').forEach(function (el) {
    el.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && el.form) { e.preventDefault(); el.form.requestSubmit(); }
    });
  });
  document.querySelectorAll('[data-submit-on-ctrl-enter]').forEach(function (el) {
    el.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && el.form) {
        e.preventDefault();
        el.form.requestSubmit();
      }
    });
  });

  // The third person's "other number": shown (and focused) once picked, so that an agreed line
  // takes one row and Tab goes from line to line.
  document.querySelectorAll('[data-pick-typed]').forEach(function (input) {
    var radio = input.parentNode.querySelector('[data-pick-typed-radio]');
    if (!radio || !radio.form) return;
    var group = radio.form.querySelectorAll('input[type=radio][name="' + radio.name + '"]');
    function sync() { input.hidden = !radio.checked; }
    input.addEventListener('input', function () {
      if (input.value !== '') { radio.checked = true; sync(); }
    });
    group.forEach(function (r) {
      r.addEventListener('change', function () {
        sync();
        if (radio.checked) input.focus();
      });
    });
    sync();
  });
})();
