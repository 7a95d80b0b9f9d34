// Writes N rows in the UCI Online Shoppers format (for when ../shared/data is
// absent): buyers have more product pages and a page value, as in the real
// file, so a model trained on it has something to learn.
// usage: node gen-shoppers.mjs N OUT.csv
import { writeFileSync } from 'node:fs';

const [n = '1000', out = 'shoppers.csv'] = process.argv.slice(2);
let seed = 42;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const months = ['Feb', 'Mar', 'May', 'June', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const rows = ['Administrative,Administrative_Duration,Informational,Informational_Duration,ProductRelated,ProductRelated_Duration,BounceRates,ExitRates,PageValues,SpecialDay,Month,OperatingSystems,Browser,Region,TrafficType,VisitorType,Weekend,Revenue'];
for (let i = 0; i < Number(n); i++) {
  const buy = rnd() < 0.16;
  const adm = Math.floor(rnd() * 4);
  const inf = Math.floor(rnd() * 2);
  const prod = 1 + Math.floor(rnd() * (buy ? 40 : 20));
  const bounce = buy ? rnd() * 0.02 : rnd() * 0.1;
  const exit = Math.min(1, bounce + rnd() * 0.05);
  const value = buy ? 5 + rnd() * 40 : rnd() < 0.1 ? rnd() * 10 : 0;
  rows.push([
    adm, (adm * rnd() * 60).toFixed(1), inf, (inf * rnd() * 40).toFixed(1), prod, (prod * (10 + rnd() * 50)).toFixed(1),
    bounce.toFixed(4), exit.toFixed(4), value.toFixed(3), 0, months[Math.floor(rnd() * months.length)],
    1 + Math.floor(rnd() * 3), 1 + Math.floor(rnd() * 4), 1 + Math.floor(rnd() * 9), 1 + Math.floor(rnd() * 10),
    rnd() < 0.85 ? 'Returning_Visitor' : 'New_Visitor', rnd() < 0.25 ? 'TRUE' : 'FALSE', buy ? 'TRUE' : 'FALSE',
  ].join(','));
}
writeFileSync(out, rows.join('\n') + '\n');
