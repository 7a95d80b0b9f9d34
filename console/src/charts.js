// Chart.js with only the parts the console uses registered (smaller bundle).
// Animations are off: charts redraw every second and must stay cheap.
import {
  Chart,
  LineController,
  LineElement,
  PointElement,
  BarController,
  BarElement,
  LinearScale,
  CategoryScale,
  Legend,
  Tooltip,
  Filler,
} from 'chart.js';

Chart.register(LineController, LineElement, PointElement, BarController, BarElement, LinearScale, CategoryScale, Legend, Tooltip, Filler);
Chart.defaults.animation = false;
Chart.defaults.font.family = 'system-ui, sans-serif';
Chart.defaults.color = '#c9d1d9';
Chart.defaults.borderColor = 'rgba(240,246,252,0.1)';

export { Chart };

export const COLORS = ['#58a6ff', '#3fb950', '#d29922', '#f778ba', '#a371f7', '#ff7b72', '#39c5cf', '#e3b341', '#8b949e', '#56d364', '#bc8cff', '#ffa657'];

/// A time-series line chart holding at most `maxPoints` points per series.
export function timeSeries(canvas, series, { maxPoints = 300, yTitle = '' } = {}) {
  const chart = new Chart(canvas, {
    type: 'line',
    data: {
      labels: [],
      datasets: series.map((s, i) => ({
        label: s.label,
        data: [],
        borderColor: s.color || COLORS[i],
        backgroundColor: s.color || COLORS[i],
        borderWidth: 1.5,
        pointRadius: 0,
        tension: 0.2,
      })),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { ticks: { maxTicksLimit: 6, maxRotation: 0 } },
        y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle } },
      },
      plugins: { legend: { display: series.length > 1, labels: { boxWidth: 10 } } },
    },
  });
  return {
    chart,
    push(label, values) {
      chart.data.labels.push(label);
      chart.data.datasets.forEach((d, i) => d.data.push(values[i]));
      if (chart.data.labels.length > maxPoints) {
        chart.data.labels.shift();
        chart.data.datasets.forEach((d) => d.data.shift());
      }
    },
    draw() {
      chart.update('none');
    },
    destroy() {
      chart.destroy();
    },
  };
}

export function barChart(canvas, labels, datasets, { horizontal = false, yTitle = '' } = {}) {
  return new Chart(canvas, {
    type: 'bar',
    data: {
      labels,
      datasets: datasets.map((d, i) => ({ backgroundColor: COLORS[i % COLORS.length], ...d })),
    },
    options: {
      indexAxis: horizontal ? 'y' : 'x',
      responsive: true,
      maintainAspectRatio: false,
      scales: { y: { title: { display: !!yTitle, text: yTitle } } },
      plugins: { legend: { display: datasets.length > 1, labels: { boxWidth: 10 } } },
    },
  });
}
