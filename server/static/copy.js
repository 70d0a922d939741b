// Copy buttons: a button[data-copy] copies the text of the element whose id it names (the
// station page's full address), then says so. Served from the site, as the strict CSP wants;
// without JavaScript, or without a clipboard, the button stays hidden and the text is there to
// select.
'use strict';
(function () {
  if (!navigator.clipboard) return;
  document.querySelectorAll('button[data-copy]').forEach(function (button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    var label = button.textContent;
    button.hidden = false;
    button.addEventListener('click', function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = button.dataset.copied;
        setTimeout(function () { button.textContent = label; }, 2000);
      }, function () {
        window.getSelection().selectAllChildren(source);
      });
    });
  });
})();
