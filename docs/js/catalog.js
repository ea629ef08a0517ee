// Filter the catalog table by task and spatial dims.
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("catalog-table");
  if (!table) return;
  const task = document.getElementById("filter-task");
  const dims = document.getElementById("filter-dims");
  const count = document.getElementById("catalog-count");
  const apply = () => {
    let shown = 0;
    for (const row of table.tBodies[0].rows) {
      const ok = (!task.value || row.dataset.task === task.value) &&
                 (!dims.value || row.dataset.dims.split(" ").includes(dims.value));
      row.style.display = ok ? "" : "none";
      shown += ok;
    }
    count.textContent = `${shown} model${shown === 1 ? "" : "s"}`;
  };
  task.addEventListener("change", apply);
  dims.addEventListener("change", apply);
  apply();
});
