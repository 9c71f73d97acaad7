// The portal's page script (a file, never inline: the CSP allows only 'self'). It shows
// times in the reader's own clock and time zone, and opens a form paused after too many
// failed attempts again when the pause ends. Without it the page still works: the time
// stays in UTC and a reload brings the form back.
'use strict';

document.addEventListener('DOMContentLoaded', () => {
  // In the page's language (its <html lang>); `data-local-time="datetime"` adds the date.
  const lang = document.documentElement.lang || undefined;
  for (const t of document.querySelectorAll('time[data-local-time]')) {
    const when = new Date(t.getAttribute('datetime'));
    if (!Number.isNaN(when.getTime())) {
      t.textContent = t.dataset.localTime === 'datetime'
        ? when.toLocaleString(lang, { dateStyle: 'medium', timeStyle: 'short' })
        : when.toLocaleTimeString(lang, { hour: '2-digit', minute: '2-digit' });
    }
  }
  for (const f of document.querySelectorAll('fieldset[data-paused-until]')) {
    const wait = new Date(f.dataset.pausedUntil).getTime() - Date.now();
    if (Number.isNaN(wait) || wait > 24 * 3600 * 1000) continue;
    setTimeout(() => {
      f.disabled = false;
      const note = document.getElementById('pause-over');
      if (note) note.textContent = ((document.getElementById('portal-words') || {}).dataset || {}).tryAgainNow || 'You can try again now.';
    }, Math.max(0, wait) + 500);
  }
});
