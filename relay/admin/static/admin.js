// The admin page works without this file; it adds one convenience: a checkbox that
// selects or clears every row's checkbox (data-select-all names their field).
document.addEventListener("change", (event) => {
  const box = event.target;
  const name = box.getAttribute && box.getAttribute("data-select-all");
  if (!name) return;
  for (const row of document.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
    row.checked = box.checked;
  }
});
