-- tokenvault 0.6.0 -> 0.7.0: security I (issue 15)
\echo Use "ALTER EXTENSION tokenvault UPDATE TO '0.7.0'" to load this file. \quit
