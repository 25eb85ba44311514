-- SPDX-License-Identifier: MIT
-- Hundreds of thousands of rows, indexes and joins, all in memory.
PRAGMA cache_size = -65536;
PRAGMA temp_store = memory;
CREATE TABLE a(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
CREATE TABLE b(id INTEGER PRIMARY KEY, k INTEGER, w REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
INSERT INTO a SELECT x, (x * 7919) % 100003, printf('row-%d-%x', x, x * 2654435761 % 4294967296) FROM c;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
INSERT INTO b SELECT x, (x * 104729) % 100003, (x % 977) / 7.0 FROM c;
CREATE INDEX ak ON a(k);
CREATE INDEX bk ON b(k);
SELECT count(*), sum(length(a.v)), round(sum(b.w), 3) FROM a JOIN b ON a.k = b.k;
SELECT a.k, count(*) AS c FROM a JOIN b ON a.k = b.k GROUP BY a.k ORDER BY c DESC, a.k LIMIT 5;
SELECT v FROM a ORDER BY v DESC LIMIT 3;
SELECT count(DISTINCT k), max(w) FROM b WHERE id % 3 = 0;
