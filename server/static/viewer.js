// Photo viewer of the review pages: zoom, pan, rotate, by mouse, touch (pinch and drag) and
// keyboard. Without JavaScript the photo still shows, fitted to the frame, with a link to the
// full file. Also: single-key shortcuts for links marked data-key (next/previous capture).
'use strict';
(function () {
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
    stage.addEventListener('keydown', function (e) {
      var step = 40;
      var handled = true;
      switch (e.key) {
        case '+': case '=': zoom(1.25); break;
        case '-': case '_': zoom(0.8); break;
        case 'r': case 'R': rotate(e.shiftKey ? -90 : 90); break;
        case '0': reset(); break;
        case 'ArrowLeft': pan(step, 0); break;
        case 'ArrowRight': pan(-step, 0); break;
        case 'ArrowUp': pan(0, step); break;
        case 'ArrowDown': pan(0, -step); break;
        default: handled = false;
      }
      if (handled) { e.preventDefault(); e.stopPropagation(); }
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

  // Single-key shortcuts (n, p) for links marked data-key, except while typing.
  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    var link = document.querySelector('a[data-key="' + e.key + '"]');
    if (link) { e.preventDefault(); link.click(); }
  });
})();
