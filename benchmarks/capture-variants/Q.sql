-- P.sql, then without the function's SET extra_float_digits.
\ir P.sql
SELECT format('ALTER FUNCTION %s() RESET ALL', :'capture_function') \gexec
