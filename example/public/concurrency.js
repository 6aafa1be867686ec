// The concurrency page: five POSTs leave at once, each adding 1 to the
// session's counter. The session's write lock runs them one after another,
// so the counter goes up by exactly five.
const button = document.getElementById('fire');
const counter = document.getElementById('counter');
const result = document.getElementById('result');

button.addEventListener('click', async () => {
  button.disabled = true;
  result.textContent = 'Sending…';
  const before = Number(counter.textContent);
  const increment = () =>
    fetch('/concurrency/increment', { method: 'POST', headers: { 'X-CSRF-Token': button.dataset.csrf } })
      .then((response) => (response.ok ? response.json() : Promise.reject(new Error(`HTTP ${response.status}`))));
  try {
    const answers = await Promise.all([1, 2, 3, 4, 5].map(increment));
    const now = (await (await fetch('/concurrency/counter')).json()).counter;
    counter.textContent = String(now);
    const seen = answers.map((answer) => answer.counter).join(', ');
    const lost = before + 5 - now;
    result.textContent = `Five requests at once: ${before} → ${now}, ${lost === 0 ? 'none lost' : `${lost} lost`}. The requests saw: ${seen}.`;
  } catch (error) {
    result.textContent = `Failed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
});
