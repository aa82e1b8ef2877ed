// Herald's portal: the little that needs a script (served from the binary;
// the pages allow no inline script).
(function () {
  // A portal link carries its token in the fragment (#token=…), which
  // browsers never send to servers or in Referer headers; it is posted once
  // and removed from the address bar.
  var login = document.getElementById('login');
  var match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (login && match) {
    history.replaceState(null, '', location.pathname + location.search);
    login.token.value = decodeURIComponent(match[1]);
    login.submit();
  }
  // Forms that change something hard to undo ask first.
  document.querySelectorAll('form[data-confirm]').forEach(function (form) {
    form.addEventListener('submit', function (event) {
      if (!window.confirm(form.getAttribute('data-confirm'))) event.preventDefault();
    });
  });
  // Copy buttons copy the text of the element they name.
  document.querySelectorAll('button[data-copy]').forEach(function (button) {
    button.addEventListener('click', function () {
      var source = document.querySelector(button.getAttribute('data-copy'));
      if (source && navigator.clipboard) navigator.clipboard.writeText(source.textContent);
    });
  });
  // Times typed in the browser's zone are sent with its offset from UTC.
  var offset = document.getElementById('offset');
  if (offset) offset.value = new Date().getTimezoneOffset();
})();
