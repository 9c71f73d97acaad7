// The portal's page script (a file, never inline: the CSP allows only 'self'). It shows
// times in the reader's own clock and time zone, and opens a form paused after too many
// failed attempts again when the pause ends. Without it the page still works: the time
// stays in UTC and a reload brings the form back.
'use strict';

document.addEventListener('DOMContentLoaded', () => {
  for (const t of document.querySelectorAll('time[data-local-time]')) {
    const when = new Date(t.getAttribute('datetime'));
    if (!Number.isNaN(when.getTime())) {
      t.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    }
  }
  for (const f of document.querySelectorAll('fieldset[data-paused-until]')) {
    const wait = new Date(f.dataset.pausedUntil).getTime() - Date.now();
    if (Number.isNaN(wait) || wait > 24 * 3600 * 1000) continue;
    setTimeout(() => {
      f.disabled = false;
      const note = document.getElementById('pause-over');
      if (note) note.textContent = 'You can try again now.';
    }, Math.max(0, wait) + 500);
  }
});
